# syntax=docker/dockerfile:1
# wxhub's container image: one static-ish binary on a small Debian base, run as a non-root user.
# Build: docker build -t wxhub .   Run: see docker-compose.yml and docs/operations.md.

# ---- build: the workspace, release profile, only the wxhub binary ----
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Everything the workspace's manifests and `include_str!`s name; .dockerignore keeps out
# target directories, fuzz corpora and local data.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY migrations migrations
COPY web web
# the end-to-end test package is a workspace member: cargo needs its manifest
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p wxhub \
    && install -m 0755 target/release/wxhub /usr/local/bin/wxhub

# ---- runtime: glibc, CA certificates for WeChat's TLS, nothing else ----
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wxhub \
    && useradd --system --uid 10001 --gid wxhub --home-dir /var/lib/wxhub \
       --shell /usr/sbin/nologin wxhub \
    && install -d -o wxhub -g wxhub -m 0700 /var/lib/wxhub /var/lib/wxhub/keyring \
    && install -d -o wxhub -g wxhub -m 0755 /var/lib/wxhub/site
COPY --from=build /usr/local/bin/wxhub /usr/local/bin/wxhub
USER wxhub:wxhub
WORKDIR /var/lib/wxhub
# Configuration comes from WXHUB_* variables (docs/operations.md lists them all); these are
# only what differs inside a container. The keyring: WXHUB_KEYRING (base64 of its TOML, from
# a secret manager) or a file mounted at WXHUB_KEYRING_FILE.
ENV WXHUB_LISTEN=0.0.0.0:8080 \
    WXHUB_DATA_DIR=/var/lib/wxhub \
    WXHUB_KEYRING_FILE=/var/lib/wxhub/keyring/keyring.toml \
    WXHUB_LOG_FORMAT=json
EXPOSE 8080
# The image has no curl or wget: the binary asks its own /readyz (on loopback).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["wxhub", "healthcheck"]
ENTRYPOINT ["wxhub"]
CMD ["serve"]
