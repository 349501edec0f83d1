#!/bin/bash
# Builds the Debian package, lints it, and installs it with `dpkg -i` into a
# clean Debian 12 container (the cached debootstrap base of the image test):
#
#   check-debian-package.sh SOURCE_DIR
#
# Host: debian/build.sh (from a copy of the tree), lintian (any error
# fails), the versions of debian/changelog and CMakeLists.txt agree, the man
# page names every setting and command of the packaged binary's --help.
# Container: the Depends from the archive, then dpkg -i; `outbox-relay
# --version`, `systemd-analyze verify` of both units, the conffile, the man
# page, the system user the units run as, the SQL and the docs.
# 77 (skip): dpkg-buildpackage, debhelper, lintian or podman cannot run here.
set -euo pipefail

top=$(cd "$1" && pwd)
container_env=$top/tests/deploy/container-env.sh
image=docker.io/library/debian:bookworm-slim

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

for tool in dpkg-buildpackage dh lintian; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool missing (apt-get install dpkg-dev debhelper lintian)"
done
bash "$container_env" check || skip "podman cannot run here (see above)"

work=$(mktemp -d)
name=outbox-relay-deb-$$
trap 'bash "$container_env" podman rm -f "$name" "$name-deps" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# ---- versions -----------------------------------------------------------
cmake_version=$(sed -n 's/^project(outbox_relay VERSION \([^ ]*\) .*/\1/p' "$top/CMakeLists.txt")
deb_version=$(cd "$top" && dpkg-parsechangelog -S Version)
[ -n "$cmake_version" ] || fail "no project(outbox_relay VERSION ...) in CMakeLists.txt"
[ "$deb_version" = "$cmake_version" ] ||
    fail "debian/changelog has $deb_version, CMakeLists.txt has $cmake_version"

# ---- build and lint -----------------------------------------------------
# No -dbgsym package: it is not installed here and lintian would read it too.
if ! DEB_BUILD_OPTIONS="noddebs ${DEB_BUILD_OPTIONS:-}" "$top/debian/build.sh" "$work/out" >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    fail "debian/build.sh failed"
fi
deb=$work/out/outbox-relay_${deb_version}_$(dpkg --print-architecture).deb
[ -s "$deb" ] || fail "no $deb"
echo "built $(basename "$deb") (${SECONDS}s)"

lintian_rc=0
lintian --fail-on error --display-level '>=warning' "$work"/out/*.changes >"$work/lintian.log" 2>&1 ||
    lintian_rc=$?
cat "$work/lintian.log"
[ "$lintian_rc" = 0 ] || fail "lintian reports errors (exit $lintian_rc)"
echo "lintian passed (${SECONDS}s)"

# ---- the man page against the packaged binary's help --------------------
dpkg-deb -x "$deb" "$work/root"
relay=$work/root/usr/bin/outbox-relay
man_text=$(zcat "$work/root/usr/share/man/man1/outbox-relay.1.gz")
for setting in $("$relay" --help | grep -o '^  OUTBOX_[A-Z0-9_]*'); do
    grep -q "^\.BR $setting " <<<"$man_text" || fail "the man page lacks the setting $setting"
done
commands=$("$relay" --help | sed -n 's/^Commands ([^)]*): *//p' | tr -d ' ' | tr ',' ' ')
[ -n "$commands" ] || fail "no command list in --help"
for command in $commands; do
    grep -q "^\.SS $command\$" <<<"$man_text" || fail "the man page lacks the command $command"
done
echo "man page: $(grep -c '^\.BR OUTBOX_' <<<"$man_text") settings, commands: $commands"

# ---- install into a clean container -------------------------------------
# A container of the Debian base with nothing of outbox-relay in it.
# Runtime dependencies by name, without versions or alternatives.
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/[|(].*//; s/ //g' | grep -v '^$' | tr '\n' ' ')
cat >"$work/out/in-container.sh" <<EOF
#!/bin/bash
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
dpkg -i /pkg/$(basename "$deb")
echo "--- outbox-relay --version"
outbox-relay --version
echo "--- systemd-analyze verify"
# The template is verified as an instance, with its environment file.
cp /etc/outbox-relay/outbox-relay.env /etc/outbox-relay/orders.env
out=\$(systemd-analyze verify outbox-relay.service outbox-relay@orders.service 2>&1) || { echo "\$out"; exit 1; }
[ -z "\$out" ] || { echo "systemd-analyze verify complained: \$out"; exit 1; }
# The sandbox of deploy/systemd holds with the static user (exposure <= 2.0).
systemd-analyze security --offline=true --threshold=20 /lib/systemd/system/outbox-relay.service | tail -n 1
for unit in outbox-relay.service outbox-relay@.service; do
    grep -qx 'User=outbox-relay' /lib/systemd/system/\$unit
    grep -qx 'ExecStart=/usr/bin/outbox-relay' /lib/systemd/system/\$unit
done
echo "--- conffiles"
dpkg-query -W -f='\${Conffiles}\n' outbox-relay | tee /tmp/conffiles
grep -q '^ /etc/outbox-relay/outbox-relay.env ' /tmp/conffiles
[ "\$(stat -c %a /etc/outbox-relay/outbox-relay.env)" = 640 ]
echo "--- man -w outbox-relay"
man -w outbox-relay
echo "--- the system user"
getent passwd outbox-relay
[ "\$(getent passwd outbox-relay | cut -d: -f7)" = /usr/sbin/nologin ]
echo "--- files"
ls /usr/share/outbox-relay/sql/*.sql
ls /usr/share/doc/outbox-relay/README.md* /usr/share/doc/outbox-relay/README.deploy.md*
# Reinstalling keeps the user and the edited conffile.
echo 'OUTBOX_TABLE=orders_outbox' >>/etc/outbox-relay/outbox-relay.env
dpkg -i /pkg/$(basename "$deb") >/dev/null
grep -qx 'OUTBOX_TABLE=orders_outbox' /etc/outbox-relay/outbox-relay.env
echo "in-container checks passed"
EOF
# The base image plus the Depends, systemd and man-db from the archive, made
# once per dependency list and kept: later runs skip apt.
deps="$depends systemd man-db"
deps_image=localhost/outbox-relay-deb-deps:$(printf '%s' "$deps" | sha256sum | cut -c1-12)
if ! bash "$container_env" podman image exists "$deps_image"; then
    echo "making $deps_image: $deps"
    # The slim base keeps man pages and docs out of every install: a real system does not.
    if ! bash "$container_env" podman run --name "$name-deps" "$image" bash -c "
        set -e; export DEBIAN_FRONTEND=noninteractive
        rm -f /etc/dpkg/dpkg.cfg.d/docker
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $deps >/dev/null
        rm -rf /var/lib/apt/lists/*" >"$work/deps.log" 2>&1; then
        tail -n 30 "$work/deps.log" >&2
        bash "$container_env" podman rm -f "$name-deps" >/dev/null 2>&1 || true
        fail "installing the Depends from the archive failed"
    fi
    bash "$container_env" podman commit --quiet "$name-deps" "$deps_image" >/dev/null
    bash "$container_env" podman rm "$name-deps" >/dev/null
    echo "made $deps_image (${SECONDS}s)"
fi
if ! bash "$container_env" podman run --rm --name "$name" -v "$work/out:/pkg:ro" "$deps_image" \
    bash /pkg/in-container.sh >"$work/container.log" 2>&1; then
    tail -n 40 "$work/container.log" >&2
    fail "installing or checking the package in the container failed"
fi
cat "$work/container.log"
echo "PASS: $(basename "$deb") built, lint-clean, installed and checked (${SECONDS}s)"
