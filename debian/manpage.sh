#!/bin/bash
# Writes outbox-relay(1) from the built binary's own help, so the man page
# lists exactly the commands and settings the binary has (the settings
# table in relay/lib/config.c drives --help):
#
#   debian/manpage.sh BINARY > outbox-relay.1
#
# `BINARY --help` gives the synopsis, the options, the command names and
# every setting; `BINARY COMMAND --help` gives each command's flags.
set -euo pipefail

bin=$1
help=$("$bin" --help)
version=$("$bin" --version | awk 'NR == 1 { print $2 }')
commands=$(printf '%s\n' "$help" | sed -n 's/^Commands ([^)]*): *//p' | tr -d ' ' | tr ',' ' ')
[ -n "$version" ] || { echo "manpage.sh: no version from $bin --version" >&2; exit 1; }
[ -n "$commands" ] || { echo "manpage.sh: no \"Commands (...):\" line in $bin --help" >&2; exit 1; }
# The date of the changelog entry when dpkg-buildpackage sets it: reproducible.
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)

# Help text to roff. Lines "  --flag   text" become tagged paragraphs,
# settings lines "  OUTBOX_X  --x  default: v" plus their indented
# description become one entry each, each other line is a paragraph.
to_roff() {
    awk '
    function esc(s) {
        gsub(/\\/, "\\e", s)
        gsub(/-/, "\\-", s)
        if (s ~ /^[.\047]/) s = "\\&" s
        return s
    }
    /^Usage: / { next }
    /^Commands \(/ { next }
    /^Settings \(/ { next }
    /^$/ { next }
    /^  OUTBOX_[A-Z0-9_]+ +--[a-z0-9-]+ +default: / {
        print ".TP"
        default = $0
        sub(/^.*default: /, "", default)
        printf ".BR %s \", \" %s\n", $1, esc($2)
        print "Default: " esc(default) "."
        next
    }
    /^  --?[a-z]/ {
        match($0, /^  +[^ ]+( [^ ]+)*/)
        flag = substr($0, RSTART, RLENGTH)
        text = substr($0, RSTART + RLENGTH)
        sub(/^ +/, "", flag); sub(/^ +/, "", text)
        print ".TP"
        print ".B " esc(flag)
        if (text != "") print esc(text)
        next
    }
    /^   / { line = $0; sub(/^ +/, "", line); print esc(line); next }
    { print ".PP"; print esc($0) }'
}

cat <<EOF
.TH OUTBOX\\-RELAY 1 "$date" "outbox\\-relay $version" "User Commands"
.SH NAME
outbox\\-relay \\- relay a PostgreSQL outbox table to NATS JetStream
.SH SYNOPSIS
.B outbox\\-relay
[\\fB\\-\\-check\\fR | \\fB\\-\\-requeue\\-dead\\fR | \\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR]
[\\fB\\-\\-\\fIsetting\\fB=\\fIvalue\\fR ...]
.br
.B outbox\\-relay
.I command
[\\fIflags\\fR] [\\fB\\-\\-\\fIsetting\\fB=\\fIvalue\\fR ...]
.SH DESCRIPTION
EOF
# The daemon's own text up to the settings: description and options.
printf '%s\n' "$help" | sed '/^Settings (/,$d' | to_roff
cat <<'EOF'
.TP
.B \-\-help
print the commands and every setting with its default, then exit
.TP
.B \-\-version
print the version and the versions of the libraries, then exit
.SH COMMANDS
Each command connects with the daemon's settings and exits.
EOF
for cmd in $commands; do
    usage=$("$bin" "$cmd" --help | sed -n '1s/^Usage: //p')
    printf '.SS %s\n.B %s\n' "$cmd" "$(printf '%s' "$usage" | sed 's/-/\\-/g')"
    "$bin" "$cmd" --help | to_roff
done
echo '.SH SETTINGS'
echo 'Every setting is an environment variable and a flag; a flag wins over the variable.'
printf '%s\n' "$help" | sed -n '/^Settings (/,$p' | sed 1d | to_roff
cat <<'EOF'
.SH FILES
.TP
.I /etc/outbox\-relay/outbox\-relay.env
settings of
.BR outbox\-relay.service ,
one
.I OUTBOX_NAME=value
a line
.TP
.I /etc/outbox\-relay/NAME.env
settings of the instance
.B outbox\-relay@NAME.service
(the template unit, for several outboxes on one host)
.TP
.I /usr/share/outbox\-relay/sql/
the SQL migrations that
.B outbox\-relay migrate
applies (it carries its own copy)
.TP
.I /usr/share/doc/outbox\-relay/
the README, docs/ (configuration, operations, guarantees) and the deployment notes
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR psql (1)
EOF
