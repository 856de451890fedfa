# syntax=docker/dockerfile:1
#
# pagegate container image.
#
#   docker build -t pagegate .
#   docker run -d --name pagegate -p 8080:8080 -p 8443:8443 \
#       -v "$PWD/gateway.toml:/etc/pagegate/gateway.toml:ro" \
#       -v "$PWD/certs:/etc/pagegate/certs:ro" \
#       -v pagegate-data:/data \
#       pagegate
#
# The configuration is not baked in: mount it at /etc/pagegate/gateway.toml. Inside the
# container it must listen on all interfaces and keep its data in the volume:
#
#   data_dir = "/data"
#   [server]
#   listen = "0.0.0.0:8080"       # the HEALTHCHECK below needs it, even for HTTPS-only sites
#   tls_listen = "0.0.0.0:8443"   # only with sites that have `tls`
#
# To edit the file and `pagegate reload`, mount its folder instead (-v "$PWD/etc:/etc/pagegate:ro"):
# a single-file bind mount keeps showing the old file once an editor replaces it.
# Running, upgrading and backing up the container: docs/operations.md.
#
# Certificate paths in the file are relative to /etc/pagegate (e.g. "certs/site.pem").
# Check a configuration with the same image:
#   docker run --rm -v "$PWD/gateway.toml:/etc/pagegate/gateway.toml:ro" pagegate \
#       check --config /etc/pagegate/gateway.toml

# ---- build --------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The target directory is a build cache, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/pagegate /out/pagegate \
    && install -d -m 0750 /out/root/data

# ---- run ----------------------------------------------------------------------------------
# pagegate links glibc dynamically; distroless/cc provides glibc, libgcc, CA certificates (for
# https upstreams) and a non-root user (uid 65532), and no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/pagegate /usr/local/bin/pagegate
# An empty /data owned by the non-root user, so a fresh named volume inherits that owner.
COPY --from=builder --chown=65532:65532 /out/root/ /
VOLUME /data
ENV PAGEGATE_CONFIG=/etc/pagegate/gateway.toml
# Ports above 1024: the non-root user cannot bind 80/443; map them with -p 80:8080 -p 443:8443.
EXPOSE 8080 8443
USER 65532:65532
# The image has no shell and no HTTP client, so the binary checks itself: `pagegate healthcheck`
# reads the same configuration and asks `{prefix}/healthz` on its plain listener over loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/pagegate", "healthcheck", "--timeout", "3s"]
# SIGTERM (docker stop) starts a graceful shutdown bounded by server.shutdown_grace (default
# 30s); give `docker stop --time` a little more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pagegate"]
CMD ["serve", "--config", "/etc/pagegate/gateway.toml"]
