#!/usr/bin/env bash
# The export benchmark (issue 7): builds the release binary, synthesizes a Synthea-shaped
# population (`bulkfhir synth`: copies of the sample with fresh ids), and on each backend loads
# it, exports it at system, Patient and Group level (and de-identified with the reference
# engine's sample configuration), polls status under load with wrk, and prints
# one table with the database's own ceiling and the ratio beside each figure (scripts/bench.py).
# Not part of CI: it takes minutes and a few GB of scratch space.
#
#   scripts/bench.sh [RESOURCES]     default 1000000
#   BENCH_BACKENDS   postgres,sqlite (default both)
#   BENCH_POSTGRES   Postgres server (default postgres://postgres@127.0.0.1:5432); the
#                    benchmark creates and drops the database bulkfhir_bench on it
#   BENCH_DATABASE   that database's name (default bulkfhir_bench)
#   BENCH_DIR        scratch directory (default /tmp/bulkfhir-bench; BENCH_KEEP=1 keeps it)
set -euo pipefail
cd "$(dirname "$0")/.."

export BENCH_RESOURCES="${1:-${BENCH_RESOURCES:-1000000}}"
for tool in psql sqlite3 wrk; do
    if ! command -v "$tool" >/dev/null; then
        case "$tool" in
            psql) package=postgresql-client ;;
            *) package="$tool" ;;
        esac
        echo "bench.sh: installing $package (Debian package) for $tool" >&2
        apt-get install -y "$package" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$package" >/dev/null; }
    fi
done

cargo build --release --locked --bin bulkfhir
export BULKFHIR_BIN="${CARGO_TARGET_DIR:-target}/release/bulkfhir"
exec python3 scripts/bench.py
