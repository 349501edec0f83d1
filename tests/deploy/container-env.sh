#!/bin/bash
# Runs a podman command in a private, cached container setup that works offline.
#
#   tests/deploy/container-env.sh check          exit 0 if podman, runc and debootstrap are here
#   tests/deploy/container-env.sh podman ARGS... run podman with the private setup
#
# No registry is reachable from the test machines, so the base image the
# Dockerfile starts from (docker.io/library/debian:bookworm-slim) is made here
# once with debootstrap from the Debian mirror apt already uses, trimmed like
# the real slim image, and imported under that name. The tarball and the
# storage live in a cache folder, so only the first run pays for it.
#
# Environment:
#   OUTBOX_CONTAINER_CACHE  cache folder (default ${XDG_CACHE_HOME:-~/.cache}/outbox-relay-podman)
#   OUTBOX_DEBIAN_MIRROR    Debian mirror (default: the first one in apt's sources)
set -euo pipefail

BASE_IMAGE=docker.io/library/debian:bookworm-slim
SUITE=bookworm

cache=${OUTBOX_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay-podman}

say() { printf 'container-env: %s\n' "$*" >&2; }

tools_present() {
    local missing=()
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "missing: ${missing[*]} (apt-get install podman runc debootstrap)"
        return 1
    fi
    # debootstrap and rootful storage under a private root need root.
    if [ "$(id -u)" != 0 ]; then
        say "needs root (rootful podman with a private storage root)"
        return 1
    fi
}

# The mirror apt uses, from deb822 or one-line sources; deb.debian.org if none.
debian_mirror() {
    if [ -n "${OUTBOX_DEBIAN_MIRROR:-}" ]; then
        echo "$OUTBOX_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }
             /^deb / { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' |
        grep -E '/debian/?$' | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

write_config() {
    mkdir -p "$cache/storage" "$cache/run" "$cache/tmp" "$cache/volumes"
    # crun fails on this host's cgroup v1/v2 mix; runc with cgroupfs works.
    # Lower ulimits: the host's defaults exceed what the runtime may set.
    cat >"$cache/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
netns = "host"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$cache/tmp"
volume_path = "$cache/volumes"
EOF
    cat >"$cache/storage.conf" <<EOF
[storage]
driver = "${OUTBOX_CONTAINER_DRIVER:-overlay}"
graphroot = "$cache/storage"
runroot = "$cache/run"
EOF
    export CONTAINERS_CONF="$cache/containers.conf"
    export CONTAINERS_STORAGE_CONF="$cache/storage.conf"
}

# A minbase root trimmed the way debian:bookworm-slim is: no docs, man pages
# or locales, no apt lists; dpkg told to keep them out of later installs.
make_base_tarball() {
    local mirror root
    mirror=$(debian_mirror)
    root="$cache/rootfs.$$"
    say "debootstrap --variant=minbase $SUITE from $mirror (once; about a minute)"
    rm -rf "$root"
    trap 'rm -rf "$root"' EXIT
    if ! debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        say "debootstrap failed (log: $cache/debootstrap.log)"
        return 1
    fi
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
    # The mirror may be a dated snapshot: its Release files are past their
    # Valid-Until, exactly as on the host.
    printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99no-valid-until"
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$SUITE" "$mirror" "$SUITE" \
        >"$root/etc/apt/sources.list"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/log/* "$root"/tmp/*
    tar -C "$root" --numeric-owner -cf "$cache/base.tar.partial" .
    mv "$cache/base.tar.partial" "$cache/base-$SUITE.tar"
    rm -rf "$root"
    trap - EXIT
}

ensure_base_image() {
    if podman image exists "$BASE_IMAGE" 2>/dev/null; then
        return
    fi
    [ -s "$cache/base-$SUITE.tar" ] || make_base_tarball
    say "importing $BASE_IMAGE"
    podman import --quiet --change 'CMD ["bash"]' "$cache/base-$SUITE.tar" "$BASE_IMAGE" >/dev/null
}

case "${1:-}" in
check)
    tools_present
    ;;
podman)
    shift
    tools_present
    mkdir -p "$cache"
    write_config
    # One setup at a time: two first runs must not debootstrap twice.
    exec 9>"$cache/lock"
    flock 9
    ensure_base_image
    flock -u 9
    exec 9>&-
    exec podman "$@"
    ;;
*)
    sed -n '2,6p' "$0" >&2
    exit 2
    ;;
esac
