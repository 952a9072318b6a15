# syntax=docker/dockerfile:1
#
# Promoter's container image.
#   docker build -t promoter .
#   docker run --rm -p 8082:8082 -v "$PWD/examples/local:/manifests:ro" promoter \
#     serve --manifests /manifests
# In a cluster, install charts/promoter instead; it runs `promoter serve` in Kubernetes mode.

# --- build ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# The toolchain rust-toolchain.toml pins, and the target the plugins are built for
# (host/build.rs builds them with a nested cargo and embeds them in the binary).
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustup target add wasm32-wasip2

COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit); the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p promoter \
    && install -D -m 0755 target/release/promoter /out/promoter

# --- run -----------------------------------------------------------------------------
FROM debian:bookworm-slim

# git runs the plugins' git capability (host-run, credentials from Secrets): HTTPS needs
# the CA bundle, SSH remotes need the OpenSSH client.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       git ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/*

# A numeric, non-root user with a passwd entry: ssh refuses to run for a uid it cannot
# look up. The chart runs the container as 65532:65532.
RUN groupadd --gid 65532 promoter \
    && useradd --uid 65532 --gid 65532 --home-dir /var/lib/promoter --no-create-home \
       --shell /usr/sbin/nologin promoter \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/promoter

COPY --from=builder /out/promoter /usr/local/bin/promoter

USER 65532:65532
WORKDIR /var/lib/promoter
ENV PROMOTER_DATA_DIR=/var/lib/promoter \
    PROMOTER_LOG_FORMAT=json

# The binary's default listeners: 8082 public (/promotion, /approval), 8080 internal
# (/metrics, /healthz, /readyz, /promotions). The chart and the CLI use the same ports.
EXPOSE 8082 8080

ENTRYPOINT ["/usr/local/bin/promoter"]
CMD ["serve"]
