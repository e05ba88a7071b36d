# One image per service from one Dockerfile: `docker build --build-arg SERVICE=todo .` (or
# notification, analytics); `make images` builds them all. Dependencies are compiled
# in their own layer (cargo-chef), so a code change rebuilds only the workspace crates. The
# runtime image is distroless (no shell, no package manager) and runs as a non-root user.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version ~0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
ARG SERVICE=todo
RUN cargo build --release --locked --bin "${SERVICE}" && cp "target/release/${SERVICE}" /service

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /service /service
# The same non-root user as the Deployments' securityContext.
USER 65532:65532
ENV APP_HOST=0.0.0.0 APP_PORT=8080 LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/service"]
