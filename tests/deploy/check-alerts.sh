#!/bin/bash
# Checks the Prometheus alerts with promtool: syntax (check rules) and behaviour (test rules).
#
#   check-alerts.sh ALERTS_YAML RULE_TESTS_YAML
#
# The rule tests feed series to the alerts and assert which fire: dead rows
# alert until requeued, a down relay alerts per instance, failures per reason.
set -euo pipefail

alerts=$1
tests=$2

if ! command -v promtool >/dev/null 2>&1; then
    echo "SKIP: promtool not installed (Debian package prometheus)"
    exit 77
fi
promtool check rules "$alerts"
# test rules finds rule_files relative to the test file: run it next to a copy of the alerts.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$alerts" "$work/alerts.yaml"
cp "$tests" "$work/alerts-test.yaml"
promtool test rules "$work/alerts-test.yaml"
echo "ok: alerts pass promtool check rules and test rules"
