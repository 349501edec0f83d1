# outbox-relay container image: built in one Debian stage, run from a slim one.
#
#   podman build -t outbox-relay .        (or docker build)
#   podman run --rm -e OUTBOX_PG_URL=... -e OUTBOX_NATS_URL=... outbox-relay
#
# The runtime stage carries the binary, the runtime libraries, CA
# certificates and the SQL migrations; the relay runs as uid 10001 and needs
# no shell, no writable filesystem and no capabilities.

# ---- build ----------------------------------------------------------------
FROM docker.io/library/debian:bookworm-slim AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev cmake make pkg-config binutils \
      libpq-dev libnats-dev libev-dev libjansson-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY sql/ sql/
COPY include/ include/
COPY relay/ relay/
COPY tests/ tests/
COPY deploy/local/stream-tail.c deploy/local/
# The default build type is the one the test suite runs; -Werror holds here too.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && cmake --build /build --target outbox-relay -j"$(nproc)" \
 && strip --strip-unneeded -o /outbox-relay /build/outbox-relay \
 && /outbox-relay --version

# ---- runtime --------------------------------------------------------------
FROM docker.io/library/debian:bookworm-slim

# OCI labels: podman build --build-arg VERSION=0.1.0 \
#   --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE=<repository URL> .
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpq5 libnats3.4 libev4 libjansson4 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && groupadd --gid 10001 outbox-relay \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init \
      --home-dir /nonexistent --shell /usr/sbin/nologin outbox-relay

COPY --from=build /outbox-relay /usr/local/bin/outbox-relay
COPY sql/ /usr/share/outbox-relay/sql/

LABEL org.opencontainers.image.title="outbox-relay" \
      org.opencontainers.image.description="Relays a PostgreSQL transactional outbox table to NATS JetStream" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric user so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
EXPOSE 9841
STOPSIGNAL SIGTERM
# The binary probes its own /healthz on OUTBOX_HTTP_ADDR: no shell or curl needed.
# (podman keeps HEALTHCHECK only with --format docker; Kubernetes uses its own probes.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/outbox-relay", "--probe"]
ENTRYPOINT ["/usr/local/bin/outbox-relay"]
