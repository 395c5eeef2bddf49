#!/usr/bin/env bash
# The whole test suite: unit tests; the integration tests, which run the real server over HTTP,
# each test against both backends (`name::postgres`: a real Postgres, where each test creates its
# own database and drops it; `name::sqlite`: a SQLite file in a temporary directory); then the
# README's newcomer path (scripts/newcomer.sh) on the debug build. A failure anywhere fails the
# run; a missing Postgres is an error, never a skip. The Azure tests start their own Azurite
# (the version pinned in tools/azurite, installed here with npm ci) and the S3 test its own moto
# server (pinned in tools/moto, installed into a virtualenv); a missing one is an error too.
#
#   TEST_DATABASE_URL   Postgres server to use (default postgres://postgres@127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}"

postgres_up() {
    python3 - "$TEST_DATABASE_URL" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
try:
    socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

if ! postgres_up; then
    # A local Debian cluster that is installed but stopped: start it.
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "test.sh: starting the local Postgres cluster" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        sleep 2
    fi
fi
if ! postgres_up; then
    echo "test.sh: Postgres is not reachable at $TEST_DATABASE_URL." >&2
    echo "test.sh: the integration tests need a real Postgres (15 or later): start one, or set TEST_DATABASE_URL." >&2
    exit 1
fi

# Azurite for the Azure output tests: the pinned version, installed once into tools/azurite.
if [ ! -x tools/azurite/node_modules/.bin/azurite-blob ]; then
    if ! command -v npm >/dev/null; then
        echo "test.sh: the Azure tests need Azurite from npm, and npm is not installed (install Node.js 20 or later)." >&2
        exit 1
    fi
    echo "test.sh: installing Azurite (tools/azurite, npm ci)" >&2
    npm ci --prefix tools/azurite --no-audit --no-fund --loglevel=error
fi

# moto's S3 server for the S3 output test: the pinned version, in its own virtualenv.
if [ ! -x tools/moto/.venv/bin/moto_server ]; then
    echo "test.sh: installing moto (tools/moto/.venv, pip)" >&2
    python3 -m venv tools/moto/.venv
    tools/moto/.venv/bin/pip install --quiet --disable-pip-version-check -r tools/moto/requirements.txt
fi

# --no-fail-fast: a failing unit test must not hide the integration results (or the reverse).
cargo test --locked --all-targets --no-fail-fast

# The README's walkthrough as a person follows it (SQLite default, load, export, poll, download,
# release), on the debug binary `cargo test` just built for the integration tests: a separate
# `cargo build` would resolve features without the dev-dependencies and recompile a dozen crates.
BULKFHIR_BIN="${CARGO_TARGET_DIR:-target}/debug/bulkfhir" bash scripts/newcomer.sh
