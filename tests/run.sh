#!/usr/bin/env bash
# The whole test suite: installs what is missing (Debian 12), builds, and runs
# every unit, integration and deploy test through CTest.
#
#   bash tests/run.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

packages=(cmake gcc make pkg-config libpq-dev libnats-dev libev-dev libjansson-dev check
          postgresql nats-server openssl curl yamllint systemd podman runc debootstrap
          prometheus python3-jsonschema iptables postgresql-contrib)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$top/build" -j"$(nproc)"
# The pure modules again under AddressSanitizer and UBSan (the unit suites
# take seconds; the whole suite under the sanitizers is
# `cmake -B build-asan -DCMAKE_BUILD_TYPE=Asan && ctest --test-dir build-asan`).
cmake -S "$top" -B "$top/build-asan" -DCMAKE_BUILD_TYPE=Asan >/dev/null
cmake --build "$top/build-asan" -j"$(nproc)" --target outbox-relay $(cd "$top/tests/unit" && ls test_*.c | sed 's/\.c$//; s/^/unit_/')
ctest --test-dir "$top/build-asan" --output-on-failure -j2 --timeout 300 -L unit

# The whole suite; its summary is the last thing printed.
ctest --test-dir "$top/build" --output-on-failure -j2 --timeout 900
