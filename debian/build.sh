#!/bin/bash
# Builds the Debian package from a copy of the checkout, so the checkout
# stays as it was (dpkg-buildpackage writes into debian/ and next to the
# source tree):
#
#   debian/build.sh [OUTDIR]     (default: build-deb/)
#
# OUTDIR gets outbox-relay_VERSION_ARCH.deb and the .changes/.buildinfo.
# Needs: apt-get install debhelper dpkg-dev and the Build-Depends of
# debian/control (dpkg-checkbuilddeps lists what is missing).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$top/build-deb}" && cd "${1:-$top/build-deb}" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(cd "$top" && dpkg-parsechangelog -S Version)
src="$work/outbox-relay-$version"
mkdir "$src"
# Build trees, local state and VCS data stay behind.
tar -C "$top" --exclude='./build*' --exclude=./.git --exclude=./.local --exclude='./obj-*' \
    -cf - . | tar -C "$src" -xf -
(cd "$src" && dpkg-buildpackage -us -uc -b -jauto)
rm -f "$out"/outbox-relay_* "$out"/outbox-relay-dbgsym_*
cp "$work"/outbox-relay*_"$version"_* "$out"/
ls "$out"/outbox-relay_"$version"_*.deb
