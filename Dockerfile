# One image, three binaries: slipway-worker, slipway-starter, slipway-sandbox.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin slipway-worker --bin slipway-starter --bin slipway-sandbox

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/slipway-worker /src/target/release/slipway-starter /src/target/release/slipway-sandbox /usr/local/bin/
USER 65534
