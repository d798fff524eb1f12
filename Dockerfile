# syntax=docker/dockerfile:1
# Container image of tracepatch: one static binary on distroless/static, running as the
# non-root user 65532. `docker build -t ghcr.io/tracepatch/tracepatch:0.1.0 .`
#
# Why static (musl) on distroless/static rather than the glibc binary on distroless/cc:
# the only C in the dependency tree is ring (rustls and rcgen use it; no OpenSSL), and
# Debian's musl-tools builds it with musl-gcc, so a fully static binary costs one package
# in the build stage and leaves a final image with no libc at all: distroless/static holds
# CA certificates, /etc/passwd (the :nonroot tag runs as user 65532), /tmp and tzdata, and
# no shell.

# Any Rust 1.x image at or above the crate's rust-version (1.89); pin e.g. RUST_VERSION=1.95.
ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# Build for the build stage's own architecture (x86_64 or aarch64): with
# `docker buildx build --platform linux/arm64` this stage runs as arm64.
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# target/ is a cache mount (incremental rebuilds), so the binary is copied out of it in
# the same step. CC_<target>=musl-gcc: ring's C is compiled against musl, not glibc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && export "CC_$(echo "$target" | tr - _)=musl-gcc" \
 && cargo build --release --locked --target "$target" \
 && install -D -m 0755 "target/$target/release/tracepatch" /out/tracepatch \
 && mkdir -p /out/home

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tracepatch /usr/local/bin/tracepatch
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd;
# the same user as runAsUser in the manifests.
USER 65532:65532
# `docker run` without flags: listen on all interfaces (the binary's defaults are loopback,
# right for a laptop, useless in a container). The manifests pass --addr/--health-addr.
ENV TRACEPATCH_ADDR=0.0.0.0:8443 \
    TRACEPATCH_HEALTH_ADDR=0.0.0.0:8080
# A working directory the nonroot user owns, for the development certificate `serve`
# generates under ./certs when given no certificate (never in a cluster: the manifests
# always give one, and mount the root filesystem read-only).
COPY --from=build --chown=65532:65532 /out/home /home/nonroot
WORKDIR /home/nonroot
# 8443: HTTPS admission (POST /mutate); 8080: plain HTTP /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/tracepatch"]
CMD ["serve"]
