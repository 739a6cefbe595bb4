#!/usr/bin/env bash
# Verify the systemd unit and hold its security exposure to a threshold (used by CI).
set -euo pipefail
cd "$(dirname "$0")/.."
threshold=${1:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# verify checks that ExecStart exists: point it at this checkout's entry point.
sed "s#/opt/audio-monitor/.venv/bin/audio-monitor#$PWD/.venv/bin/audio-monitor#" \
    systemd/audio-monitor.service > "$work/audio-monitor.service"
systemd-analyze verify "$work/audio-monitor.service"
systemd-analyze security --offline=true --threshold="$threshold" "$work/audio-monitor.service" \
    | tail -n 1
