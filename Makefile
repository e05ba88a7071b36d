# dapr-todo: `make run` starts the system, `make test` runs every test.
# Run `make help` for the rest.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
RUN_DIR ?= .run
# Images: $(IMAGE_REPO)/<service>:$(IMAGE_TAG), the names the k8s manifests use.
IMAGE_REPO ?= ghcr.io/dapr-todo
IMAGE_TAG ?= 0.1.0


.PHONY: help build build-kafka images run run-kafka test test-kafka test-unit validate-k8s bench-write bench-relay bench-sidecar lint fmt clean ensure-rust

help:
	@echo "make run          build and start todo, notification and analytics with their sidecars (dapr/dapr.yaml)"
	@echo "make run-kafka    the same on the cluster's Kafka component, against a local tansu broker"
	@echo "make test         every test: unit, integration (SQLite and PostgreSQL), end to end, k8s validation"
	@echo "make test-kafka   pubsub.kafka and the whole system end to end on Kafka (tansu)"
	@echo "make bench-write  POST /todos throughput and latency vs a bare insert (release)"
	@echo "make bench-relay  outbox claim latency with a million published rows (release)"
	@echo "make bench-sidecar dev sidecar publish and delivery latency, throughput and RSS (release)"
	@echo "make images       container images of the three services ($(IMAGE_REPO)/<service>:$(IMAGE_TAG))"
	@echo "make lint         rustfmt check and clippy with warnings as errors"

ensure-rust:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

build: ensure-rust
	$(CARGO) build --release --locked --bin todo --bin notification --bin analytics --bin devsidecar

images:
	@command -v docker >/dev/null || { echo "make images needs docker" >&2; exit 1; }
	for service in todo notification analytics; do \
	  docker build --build-arg SERVICE=$$service -t $(IMAGE_REPO)/$$service:$(IMAGE_TAG) . ; \
	done

# Redis found or started by scripts/ensure-redis.sh; the Dapr CLI when installed, else the dev
# sidecar; SQLite databases under $(RUN_DIR)/data.
run: build
	RUN_DIR=$(RUN_DIR) scripts/run.sh

# The same system on the cluster's Kafka component: a tansu broker set up like the cluster's
# Kafka (SCRAM, the KafkaTopics), its own data under $(RUN_DIR)/kafka.
build-kafka: ensure-rust
	@scripts/ensure-kafka.sh --tools-only
	$(CARGO) build --release --locked --bin todo --bin notification --bin analytics --bin devsidecar --features devsidecar/kafka

run-kafka: build-kafka
	RUN_DIR=$(RUN_DIR)/kafka PUBSUB=kafka scripts/run.sh

# PostgreSQL and Redis for the tests: the ones on their standard local ports if they answer,
# else servers of our own (scripts/ensure-postgres.sh, scripts/ensure-redis.sh). Every test
# creates and drops its own database, and uses stream and group names of its own in Redis.
test: ensure-rust
	@pg=$$(scripts/ensure-postgres.sh); redis=$$(scripts/ensure-redis.sh); \
	echo "PostgreSQL for tests: $$pg; Redis for tests: $$redis"; \
	TEST_POSTGRES_URL=$$pg TEST_REDIS_HOST=$$redis $(CARGO) test --workspace --locked --no-fail-fast
	$(CARGO) build --workspace --benches --locked
	scripts/validate-k8s.sh

validate-k8s:
	scripts/validate-k8s.sh

# The Kafka suite (scripts/ensure-kafka.sh installs tansu and OpenSSL headers once): the dev
# sidecar's pubsub.kafka conformance tests against a shared tansu broker, then the whole system
# end to end on the cluster's Kafka component (k8s/base/dapr/pubsub.yaml, SCRAM-SHA-512), each
# test with a tansu broker of its own, on SQLite and PostgreSQL.
test-kafka: ensure-rust
	@brokers=$$(scripts/ensure-kafka.sh); pg=$$(scripts/ensure-postgres.sh); \
	echo "Kafka for tests: $$brokers; PostgreSQL for tests: $$pg"; \
	export PATH="$$HOME/.cargo/bin:$$PATH"; \
	TEST_KAFKA_BROKERS=$$brokers $(CARGO) test --locked -p devsidecar --features kafka --test kafka; \
	TEST_PUBSUB=kafka TEST_POSTGRES_URL=$$pg $(CARGO) test --locked -p system-tests --features kafka

test-unit: ensure-rust
	$(CARGO) test --workspace --locked --lib --bins

bench-write: ensure-rust
	@url=$$(scripts/ensure-postgres.sh); \
	BENCH_POSTGRES_URL=$$url $(CARGO) bench --locked -p todo --bench write_throughput

bench-relay: ensure-rust
	@url=$$(scripts/ensure-postgres.sh); \
	BENCH_POSTGRES_URL=$$url $(CARGO) bench --locked -p todo --bench relay_claim

bench-sidecar: ensure-rust
	@redis=$$(scripts/ensure-redis.sh); \
	BENCH_REDIS_HOST=$$redis $(CARGO) bench --locked -p devsidecar --bench footprint

lint: ensure-rust
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(RUN_DIR)
