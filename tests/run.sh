#!/usr/bin/env bash
# The whole test suite: installs what is missing (Debian 12), builds, and runs
# every unit, integration and deploy test through CTest.
#
#   bash tests/run.sh
#
# The unit and integration suites run against the AddressSanitizer + UBSan
# build: every relay an integration test starts is sanitized, and a sanitizer
# report in its log fails the test (harness.c, it_teardown). The release build
# runs the unit suites again, the deploy checks, the bench smoke and the image
# test. `ctest --test-dir build` alone runs everything against the release
# build.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

packages=(cmake gcc make pkg-config libpq-dev libnats-dev libev-dev libjansson-dev check
          postgresql nats-server openssl curl yamllint systemd podman runc debootstrap
          prometheus python3-jsonschema iptables postgresql-contrib debhelper dpkg-dev lintian)
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
cmake -S "$top" -B "$top/build-asan" -DCMAKE_BUILD_TYPE=Asan >/dev/null
cmake --build "$top/build-asan" -j"$(nproc)"

# Release build: unit, deploy, bench smoke and the image, beside the sanitized suite.
release_log=$(mktemp)
ctest --test-dir "$top/build" --output-on-failure -j1 --timeout 900 -LE integration \
    >"$release_log" 2>&1 &
release_pid=$!
release_rc=0
asan_rc=0
ctest --test-dir "$top/build-asan" --output-on-failure -j3 --timeout 900 -L 'unit|integration' \
    || asan_rc=$?
wait "$release_pid" || release_rc=$?
echo "---- release build: unit, deploy, bench smoke, image ----"
cat "$release_log"
rm -f "$release_log"
[ "$asan_rc" = 0 ] && [ "$release_rc" = 0 ]
