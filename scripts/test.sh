#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests, which run the real server over
# HTTP against a real Postgres (each test creates its own database and drops it).
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

cargo test --locked --all-targets
