# Slipway images: one Dockerfile, one target per binary.
#
#   docker build --target worker  -t slipway-worker  .
#   docker build --target starter -t slipway-starter .
#   docker build --target sandbox -t slipway-sandbox .   # dev and tests only
#
# The builder stage compiles the workspace's release binaries once (BuildKit keeps the cargo
# registry and target directory in cache mounts between builds; no `# syntax=` line, so the
# builder's own Dockerfile frontend is used and nothing else is pulled); every runtime image is
# debian-slim with CA certificates, curl (for health checks) and a single binary, run as an
# unprivileged user. docker-compose.yml builds all three from here.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# The git revision in the worker's default build id (the context has no .git):
# `docker build --build-arg SLIPWAY_GIT_REVISION=$(git rev-parse --short=12 HEAD) ...`.
ARG SLIPWAY_GIT_REVISION=unknown
ENV SLIPWAY_GIT_REVISION=${SLIPWAY_GIT_REVISION}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin slipway-worker --bin slipway-starter --bin slipway-sandbox \
 && mkdir -p /out \
 && cp target/release/slipway-worker target/release/slipway-starter target/release/slipway-sandbox /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin slipway \
 && mkdir -p /app && chown slipway /app
WORKDIR /app
ENV RUST_LOG=info
USER slipway

# The worker: polls the task queue. Stateless; scale by running more. Prometheus on :9464.
FROM runtime AS worker
COPY --from=builder /src/migrations/client-stack /app/migrations/client-stack
COPY --from=builder /out/slipway-worker /usr/local/bin/slipway-worker
ENV SUPABASE_MIGRATIONS_DIR=/app/migrations/client-stack \
    SLIPWAY_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
STOPSIGNAL SIGTERM
CMD ["slipway-worker"]

# The starter: webhooks, callbacks, REST and gRPC API, /healthz, /readyz, /metrics.
FROM runtime AS starter
COPY --from=builder /out/slipway-starter /usr/local/bin/slipway-starter
ENV SLIPWAY_HTTP_ADDR=0.0.0.0:8080 \
    SLIPWAY_GRPC_ADDR=0.0.0.0:50051
EXPOSE 8080 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz >/dev/null || exit 1
CMD ["slipway-starter"]

# The sandbox: local stand-ins of the provider APIs (dev and tests only, never production).
FROM runtime AS sandbox
COPY --from=builder /out/slipway-sandbox /usr/local/bin/slipway-sandbox
ENV SLIPWAY_SANDBOX_ADDR=0.0.0.0:8099
EXPOSE 8099
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8099/_sandbox/health >/dev/null || exit 1
CMD ["slipway-sandbox"]
