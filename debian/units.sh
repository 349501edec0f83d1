#!/bin/bash
# Installs deploy/systemd's units for the package: the binary in /usr/bin and
# the static system user the maintainer scripts create (User=outbox-relay)
# in place of DynamicUser=, which the package does not need, and the man
# page the package carries.
#
#   debian/units.sh SOURCE_DIR DEST_DIR
set -euo pipefail
src=$1 dest=$2
install -d "$dest"
for unit in outbox-relay.service outbox-relay@.service; do
    sed -e 's|^ExecStart=/usr/local/bin/outbox-relay|ExecStart=/usr/bin/outbox-relay|' \
        -e 's|^DynamicUser=yes$|User=outbox-relay\nGroup=outbox-relay|' \
        -e '/^#   install /d' \
        -e 's|^#   systemctl daemon-reload && |#   |' \
        -e 's|^Description=.*|&\nDocumentation=man:outbox-relay(1)|' \
        "$src/$unit" >"$dest/$unit"
    chmod 0644 "$dest/$unit"
    # A change upstream that these edits miss fails the build, not the install.
    for want in 'ExecStart=/usr/bin/outbox-relay' 'User=outbox-relay' 'Group=outbox-relay' \
        'Documentation=man:outbox-relay(1)'; do
        grep -qx "$want" "$dest/$unit" || { echo "units.sh: $unit lacks $want" >&2; exit 1; }
    done
    if grep -q 'DynamicUser\|/usr/local' "$dest/$unit"; then
        echo "units.sh: $unit still names DynamicUser or /usr/local" >&2
        exit 1
    fi
done
