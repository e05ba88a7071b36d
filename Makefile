# dapr-todo: `make run` starts the system, `make test` runs every test.
# Run `make help` for the rest.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
RUN_DIR ?= .run
# Images: $(IMAGE_REPO)/<service>:$(IMAGE_TAG), the names the k8s manifests use.
IMAGE_REPO ?= ghcr.io/dapr-todo
IMAGE_TAG ?= 0.1.0


.PHONY: help build images run run-kafka test test-kafka chaos fuzz test-unit validate-k8s bench-write bench-relay bench-e2e lint fmt clean ensure-rust

help:
	@echo "make run          build and start todo, notification and analytics under dapr run -f dapr/dapr.yaml (Redis); TRACING=1 adds Jaeger"
	@echo "make run-kafka    the same on the cluster's Kafka component, against a local Apache Kafka"
	@echo "make test         every test: unit, integration and property-based API tests (schemathesis; SQLite and PostgreSQL), Dapr contract and end to end under daprd on Redis, k8s validation and the alert rules' promtool tests"
	@echo "make validate-k8s the k8s part alone: both overlays against their schemas and invariants, the alert rules checked and unit-tested with promtool (scripts/validate-k8s.sh)"
	@echo "make test-kafka   the Kafka contract tests and the whole system end to end on Apache Kafka"
	@echo "make fuzz         every fuzz target (fuzz/, cargo-fuzz) for FUZZ_SECONDS each (default 60)"
	@echo "make chaos        crashes every app and daprd at random under load, restarts the broker, checks nothing was lost or doubled (CHAOS_SECONDS, CHAOS_SEED)"
	@echo "make bench-write  POST /todos throughput and latency vs a bare insert (release, load from wrk, 3 interleaved runs); TRACING=1 exports the spans to Jaeger; PEER=1 adds the FastAPI peer (bench/fastapi-peer, its own venv) with 1 and 2 uvicorn workers"
	@echo "make bench-relay  outbox claim latency with a million published rows (release)"
	@echo "make bench-e2e    the whole system (release binaries, 3 daprd, Redis) under open-loop load: latency create -> consumers, CPU and RSS per process, saturation, relay drain; chart in target/bench/"
	@echo "make images       container images of the three services ($(IMAGE_REPO)/<service>:$(IMAGE_TAG))"
	@echo "make lint         rustfmt check, clippy with warnings as errors, and no unused dependency (cargo-machete)"

ensure-rust:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

build: ensure-rust
	$(CARGO) build --release --locked --bin todo --bin notification --bin analytics

images:
	@command -v docker >/dev/null || { echo "make images needs docker" >&2; exit 1; }
	for service in todo notification analytics; do \
	  docker build --build-arg SERVICE=$$service -t $(IMAGE_REPO)/$$service:$(IMAGE_TAG) . ; \
	done

# `dapr run -f dapr/dapr.yaml` with the Dapr CLI and daprd of scripts/ensure-dapr.sh (built once
# from the Go module proxy when no Dapr of the pinned release is installed), over the Redis
# scripts/ensure-redis.sh finds or starts; SQLite databases under $(RUN_DIR)/data.
# TRACING=1: Jaeger as well, every service and daprd exporting its spans to it.
TRACING ?= 0
run: build
	RUN_DIR=$(RUN_DIR) TRACING=$(TRACING) scripts/run.sh

# The same system on the cluster's Kafka component, against an Apache Kafka set up like the
# cluster's (SCRAM, the KafkaTopics; scripts/ensure-kafka.sh), its data under $(RUN_DIR)/kafka.
run-kafka: build
	RUN_DIR=$(RUN_DIR)/kafka PUBSUB=kafka scripts/run.sh

# PostgreSQL and Redis for the tests: the ones on their standard local ports if they answer,
# else servers of our own (scripts/ensure-postgres.sh, scripts/ensure-redis.sh); daprd from
# scripts/ensure-dapr.sh; schemathesis (PyPI) for the property-based API tests from
# scripts/ensure-schemathesis.sh. Every test creates and drops its own database, starts its own
# daprd processes, and uses stream and group names (or, end to end, a redis-server) of its own.
test: ensure-rust
	@pg=$$(scripts/ensure-postgres.sh); redis=$$(NEED_REDIS_SERVER=1 scripts/ensure-redis.sh); daprd=$$(scripts/ensure-dapr.sh --daprd); \
	schemathesis=$$(scripts/ensure-schemathesis.sh); jaeger=$$(scripts/ensure-jaeger.sh); \
	echo "PostgreSQL for tests: $$pg; Redis for tests: $$redis; daprd: $$daprd; schemathesis: $$schemathesis; jaeger: $$jaeger"; \
	TEST_POSTGRES_URL=$$pg TEST_REDIS_HOST=$$redis DAPRD=$$daprd SCHEMATHESIS=$$schemathesis JAEGER=$$jaeger \
	  $(CARGO) test --workspace --locked --no-fail-fast
	$(CARGO) build --workspace --benches --locked
	scripts/validate-k8s.sh

# Renders the overlays and validates them offline (schemas, invariants), then checks the alert
# rules of k8s/base/monitoring with promtool (built once by scripts/ensure-promtool.sh):
# `promtool check rules`, `promtool test rules` of tests/alerts.test.yaml, the dashboard's PromQL.
validate-k8s:
	scripts/validate-k8s.sh

# On Apache Kafka (scripts/ensure-kafka.sh fetches it with Maven once): the Kafka contract tests
# against one shared broker, then the whole system end to end on the cluster's component
# (k8s/base/dapr/pubsub.yaml, SCRAM-SHA-512), each test with a broker of its own, on SQLite and
# PostgreSQL.
KAFKA_TEST_DIR ?= $(CURDIR)/$(RUN_DIR)/test-kafka
test-kafka: ensure-rust
	@scripts/ensure-kafka.sh --tools-only; \
	pg=$$(scripts/ensure-postgres.sh); daprd=$$(scripts/ensure-dapr.sh --daprd); \
	trap 'KAFKA_DIR=$(KAFKA_TEST_DIR) scripts/ensure-kafka.sh stop' EXIT; \
	brokers=$$(KAFKA_DIR=$(KAFKA_TEST_DIR) KAFKA_SCRAM_USER=dapr-todo KAFKA_SCRAM_PASSWORD=dapr-todo-local scripts/ensure-kafka.sh); \
	echo "Kafka for tests: $$brokers; PostgreSQL for tests: $$pg; daprd: $$daprd"; \
	TEST_KAFKA_BROKERS=$$brokers TEST_KAFKA_USER=dapr-todo TEST_KAFKA_PASSWORD=dapr-todo-local DAPRD=$$daprd \
	  $(CARGO) test --locked -p dapr-contract --features kafka --test contract kafka::; \
	$(CARGO) build --locked --bins; \
	TEST_PUBSUB=kafka TEST_POSTGRES_URL=$$pg DAPRD=$$daprd JAEGER=$$(scripts/ensure-jaeger.sh) $(CARGO) test --locked -p system-tests --features kafka

# The chaos suite (crates/system-tests/tests/system/chaos.rs): CHAOS_SECONDS of faults under
# load (default 60), seeded by CHAOS_SEED from the environment or the command line (printed, so
# a failing run can be replayed).
CHAOS_SECONDS ?= 60
chaos: ensure-rust
	@redis=$$(NEED_REDIS_SERVER=1 scripts/ensure-redis.sh); daprd=$$(scripts/ensure-dapr.sh --daprd); \
	CHAOS_SECONDS=$(CHAOS_SECONDS) TEST_REDIS_HOST=$$redis DAPRD=$$daprd \
	  $(CARGO) test --locked -p system-tests --test system chaos:: -- --ignored --nocapture

# Coverage-guided fuzzing of the parsers that take bytes from outside (fuzz/, scripts/fuzz.sh).
FUZZ_SECONDS ?= 60
fuzz: ensure-rust
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

test-unit: ensure-rust
	$(CARGO) test --workspace --locked --lib --bins

# Load from wrk (scripts/ensure-wrk.sh installs it), BENCH_SECONDS per run (default 10),
# BENCH_RUNS runs of each side interleaved (default 3), BENCH_CONCURRENCY connections (32),
# BENCH_BACKENDS (sqlite,postgres). TRACING=1: the same with the spans exported to a Jaeger of
# its own (the cost of export). PEER=1: the FastAPI peer (bench/fastapi-peer) joins the runs, with
# 1 and 2 uvicorn workers, from the venv scripts/ensure-fastapi-peer.sh builds once (BENCH_PEER).
PEER ?= 0
bench-write: ensure-rust
	@url=$$(scripts/ensure-postgres.sh); \
	if [ "$(PEER)" = 1 ]; then peer=$$(scripts/ensure-fastapi-peer.sh); export BENCH_PEER=$$peer; fi; \
	if [ "$(TRACING)" = 1 ]; then \
	  jaeger=$$(scripts/ensure-jaeger.sh); log=$$(mktemp); \
	  JAEGER_OTLP_HTTP_PORT=54318 JAEGER_OTLP_GRPC_PORT=54317 JAEGER_QUERY_PORT=56686 "$$jaeger" --config dapr/jaeger.yaml >"$$log" 2>&1 & \
	  trap "kill $$! 2>/dev/null" EXIT; \
	  for _ in $$(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/54318) 2>/dev/null && break; sleep 0.1; done; \
	  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:54318; \
	fi; \
	wrk=$$(scripts/ensure-wrk.sh) || echo "make bench-write: no wrk; the load comes from the benchmark's own process" >&2; \
	PATH=$$(dirname "$${wrk:-/nonexistent/wrk}"):$$PATH RUST_LOG=$${RUST_LOG:-warn} BENCH_POSTGRES_URL=$$url \
	  $(CARGO) bench --locked -p todo --bench write_throughput

bench-relay: ensure-rust
	@url=$$(scripts/ensure-postgres.sh); \
	BENCH_POSTGRES_URL=$$url $(CARGO) bench --locked -p todo --bench relay_claim

# The whole system as processes (crates/system-tests/benches/e2e/main.rs): BENCH_RATES (creates/s,
# default 100,500,1000,2000), BENCH_SECONDS per step (10), BENCH_READ_RATE per read API (300),
# BENCH_SATURATION=0 / BENCH_RELAY=0 skip the saturation search / the relay phase; RELAY_* go to
# the todo service. Figures on stdout and in target/bench/e2e.md, e2e.json, e2e-latency.svg.
bench-e2e: build
	@NEED_REDIS_SERVER=1 scripts/ensure-redis.sh >/dev/null; daprd=$$(scripts/ensure-dapr.sh --daprd); \
	DAPRD=$$daprd $(CARGO) bench --locked -p system-tests --bench e2e

lint: ensure-rust
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings
	scripts/check-unused-deps.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(RUN_DIR)
