#!/usr/bin/env bash
# The README's newcomer path, done exactly as a person would, in a fresh working directory:
# "Run it" with no database settings (the embedded SQLite default, ./data created on start), then
# the "Walkthrough with curl": load the Synthea sample with the load command, kick off exports
# with the README's headers, poll the Content-Location until 200, download every output file,
# cancel/release, and see the status URL answer 404. Then the server is stopped.
#
#   BULKFHIR_BIN   an already-built bulkfhir binary to use for `cargo run --release --`
#                  (scripts/test.sh passes the debug build); unset: `cargo run --release --`.
#
# Differences from the README's literal commands, and why: the working directory is a fresh
# temporary one (so ./data is new; `tests` in it links to the repository's fixtures, so the
# README's `load tests/fixtures/synthea-r4-100` works as written), and the server gets
# `--listen 127.0.0.1:<a free port>` so that it never collides with anything on 8080.
set -euo pipefail
export LC_ALL=C

repo="$(cd "$(dirname "$0")/.." && pwd)"
readonly repo
readonly expected_total=38473          # the README: "Load the Synthea sample (38,473 resources ...)"
readonly expected_observations=16315   # the README's example manifest entry for Observation
readonly synthea_group=d9f31445-f448-48c0-af57-295c005e07df

say() { printf 'newcomer: %s\n' "$*" >&2; }
fail() {
    printf 'newcomer: FAILED: %s\n' "$*" >&2
    if [ -n "${work:-}" ] && [ -s "$work/server.log" ]; then
        printf 'newcomer: last lines of the server log (%s):\n' "$work/server.log" >&2
        tail -n 40 "$work/server.log" >&2
    fi
    exit 1
}

for tool in curl python3; do
    command -v "$tool" >/dev/null || fail "'$tool' is needed and not installed"
done

# The README's defaults, not whatever this shell happens to carry.
unset DATABASE_URL
while IFS= read -r name; do unset "$name"; done < <(env | sed -n 's/^\(BULKFHIR_[A-Z_]*\)=.*/\1/p' | grep -vx BULKFHIR_BIN || true)

if [ -n "${BULKFHIR_BIN:-}" ]; then
    bin="$(cd "$(dirname "$BULKFHIR_BIN")" && pwd)/$(basename "$BULKFHIR_BIN")"
    [ -x "$bin" ] || fail "BULKFHIR_BIN=$BULKFHIR_BIN is not an executable"
    bulkfhir=("$bin")
    say "using $bin for 'cargo run --release --'"
else
    # cargo run replaces itself with the program, so the server's pid is the one started here.
    bulkfhir=(cargo run --quiet --release --manifest-path "$repo/Cargo.toml" --)
    say "building the release binary (cargo build --release)"
    cargo build --quiet --release --manifest-path "$repo/Cargo.toml" || fail "cargo build --release failed"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/bulkfhir-newcomer.XXXXXX")"
server_pid=""
cleanup() {
    local status=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$status" -eq 0 ]; then rm -rf "$work"; else say "kept $work for a look"; fi
}
trap cleanup EXIT
cd "$work"
ln -s "$repo/tests" tests

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
base="http://127.0.0.1:$port/fhir"

# --- Run it ---------------------------------------------------------------------------------
say "starting: cargo run --release -- serve --listen 127.0.0.1:$port   (in $work)"
"${bulkfhir[@]}" serve --listen "127.0.0.1:$port" >server.log 2>&1 &
server_pid=$!
deadline=$((SECONDS + 120))
until curl -sf -o /dev/null "$base/metadata"; do
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited on start (no database settings given: the README says none are needed)"
    [ "$SECONDS" -lt "$deadline" ] || fail "the server did not answer $base/metadata within 120 s"
    sleep 0.2
done
say "the server answers at $base"
[ -f data/bulkfhir.db ] || fail "no ./data/bulkfhir.db: the README's default store is a SQLite file under ./data"

# --- 1. Load the Synthea sample (while the server runs) --------------------------------------
say "1. cargo run --release -- load tests/fixtures/synthea-r4-100"
"${bulkfhir[@]}" load tests/fixtures/synthea-r4-100 >load.out 2>load.err || {
    cat load.out load.err >&2
    fail "the load command failed"
}
total_line="$(grep -E '^total ' load.out || true)"
[ -n "$total_line" ] || { cat load.out >&2; fail "the load command printed no total"; }
loaded="$(awk '{print $2}' <<<"$total_line")"
[ "$loaded" = "$expected_total" ] || fail "loaded $loaded resources, the README says $expected_total: $total_line"
grep -q ', 0 failed' <<<"$total_line" || fail "some resources failed to load: $total_line"
say "   loaded $loaded resources"

# Headers and body of one request, to files; prints the status code.
request() { # method url [curl args...]
    local method=$1 url=$2
    shift 2
    curl -s -X "$method" -D headers.txt -o body.txt -w '%{http_code}' "$@" "$url" || fail "curl could not reach $url"
}
header() { # name: value of the last response's header, or nothing
    tr -d '\r' <headers.txt | awk -v want="$(tr '[:upper:]' '[:lower:]' <<<"$1")" \
        'BEGIN { FS = ": " } tolower($1) == want { sub(/^[^:]*: /, ""); print; exit }'
}

# Kicks off with the README's headers; prints the status URL.
kick_off() { # method path [curl args...]
    local method=$1 path=$2 code location
    shift 2
    code="$(request "$method" "$base$path" -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$@")"
    [ "$code" = 202 ] || fail "$method $path answered $code, not 202 Accepted: $(cat body.txt)"
    location="$(header content-location)"
    [[ "$location" == "$base/_jobs/"* ]] || fail "$method $path: Content-Location '$location' is not a job URL under $base"
    printf '%s\n' "$location"
}

# Polls a status URL until 200 (checking the 202s' X-Progress and Retry-After); leaves the
# manifest in manifest.json.
poll() { # status_url
    local url=$1 code deadline=$((SECONDS + 300)) polls=0
    while :; do
        code="$(request GET "$url")"
        polls=$((polls + 1))
        case "$code" in
            200)
                [ -n "$(header expires)" ] || fail "the manifest of $url has no Expires header"
                cp body.txt manifest.json
                say "   200 after $polls poll(s)"
                return
                ;;
            202)
                [ -n "$(header x-progress)" ] || fail "a 202 from $url has no X-Progress header"
                [[ "$(header retry-after)" =~ ^[0-9]+$ ]] || fail "a 202 from $url has no whole-seconds Retry-After: '$(header retry-after)'"
                ;;
            *) fail "polling $url answered $code: $(cat body.txt)" ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || fail "the export at $url was still at 202 after 300 s"
        sleep 0.5
    done
}

# Downloads every output file of manifest.json with curl, checking each file's line count
# against the manifest's count and each line's resourceType against the entry's type. Prints
# "Type lines" per type, summed over files, then "total N".
download_all() {
    python3 - manifest.json >outputs.tsv <<'PY' || fail "the manifest is not what the README shows: $(cat manifest.json)"
import json, sys
m = json.load(open(sys.argv[1]))
for key in ("transactionTime", "request", "requiresAccessToken", "output", "error"):
    assert key in m, f"the manifest has no '{key}'"
assert m["error"] == [], f"the manifest lists errors: {m['error']}"
for entry in m["output"]:
    print(entry["type"], entry["url"], entry["count"], sep="\t")
PY
    local type url count lines n=0
    : >counts.txt
    while IFS=$'\t' read -r type url count; do
        curl -sf --compressed "$url" -o file.ndjson || fail "could not download $url"
        lines="$(wc -l <file.ndjson)"
        [ "$lines" = "$count" ] || fail "$url has $lines lines, the manifest says $count"
        python3 - "$type" file.ndjson <<'PY' || fail "$url is not clean NDJSON of $type"
import json, sys
for number, line in enumerate(open(sys.argv[2], encoding="utf-8"), 1):
    assert json.loads(line)["resourceType"] == sys.argv[1], f"line {number} is not a {sys.argv[1]}"
PY
        printf '%s %s\n' "$type" "$lines" >>counts.txt
        n=$((n + 1))
    done <outputs.tsv
    say "   downloaded $n file(s)"
    awk '{ by[$1] += $2; total += $2 } END { for (t in by) print t, by[t]; print "total", total + 0 }' counts.txt | sort
}
count_of() { awk -v t="$1" '$1 == t { print $2 }' <<<"$2"; }

# --- 2-4. The README's kick-off, polled and downloaded ----------------------------------------
say "2. curl -si '$base/\$export?_type=Patient,Observation' -H 'Accept: application/fhir+json' -H 'Prefer: respond-async'"
status_url="$(kick_off GET '/$export?_type=Patient,Observation')"
say "3. polling $status_url"
poll "$status_url"
say "4. downloading with curl -s --compressed"
counts="$(download_all)"
types="$(awk '$1 != "total" { print $1 }' <<<"$counts" | paste -sd, -)"
[ "$types" = "Observation,Patient" ] || fail "_type=Patient,Observation exported these types: $types"
[ "$(count_of Observation "$counts")" = "$expected_observations" ] ||
    fail "the README's example manifest shows $expected_observations Observations; exported $(count_of Observation "$counts")"
say "   $(tr '\n' ' ' <<<"$counts")"
say "5. curl -si -X DELETE $status_url   (release the finished export)"
code="$(request DELETE "$status_url")"
[ "$code" = 202 ] || fail "DELETE of a finished export answered $code, not 202: $(cat body.txt)"
code="$(request GET "$status_url")"
[ "$code" = 404 ] || fail "after the DELETE the status URL answered $code, not 404"

say "a whole system export: curl -si '$base/\$export' ..."
status_url="$(kick_off GET '/$export')"
poll "$status_url"
counts="$(download_all)"
exported="$(count_of total "$counts")"
[ "$exported" = "$expected_total" ] || fail "the system export has $exported resources, $expected_total were loaded: $(tr '\n' ' ' <<<"$counts")"
say "   $exported resources in all, as loaded"
job_dir="$(find data/exports -mindepth 1 -maxdepth 1 -type d -name "*-${status_url##*/}")"
[ -n "$job_dir" ] || fail "no folder of job ${status_url##*/} under ./data/exports (the README's output_dir)"
code="$(request DELETE "$status_url")"
[ "$code" = 202 ] || fail "DELETE of a finished export answered $code, not 202: $(cat body.txt)"
code="$(request GET "$status_url")"
[ "$code" = 404 ] || fail "after the DELETE the status URL answered $code, not 404"
deadline=$((SECONDS + 30))
while [ -e "$job_dir" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the files of the released export are still in $job_dir after 30 s"
    sleep 0.5
done
say "   released: 404, and its files are gone"

say "the README's POST kick-off: Group/$synthea_group/\$export with a Parameters body"
status_url="$(kick_off POST "/Group/$synthea_group/\$export" -H 'Content-Type: application/fhir+json' \
    -d '{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient,Condition"}]}')"
poll "$status_url"
counts="$(download_all)"
types="$(awk '$1 != "total" { print $1 }' <<<"$counts" | paste -sd, -)"
[ "$types" = "Condition,Patient" ] || fail "the Group export with _type=Patient,Condition exported these types: $types"
say "   $(tr '\n' ' ' <<<"$counts")"
code="$(request DELETE "$status_url")"
[ "$code" = 202 ] || fail "DELETE answered $code, not 202"
code="$(request GET "$status_url")"
[ "$code" = 404 ] || fail "after the DELETE the status URL answered $code, not 404"

# --- Stop ------------------------------------------------------------------------------------
say "stopping the server (SIGTERM)"
kill -TERM "$server_pid"
deadline=$((SECONDS + 30))
while kill -0 "$server_pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the server did not stop within 30 s of SIGTERM"
    sleep 0.2
done
exit_code=0
wait "$server_pid" || exit_code=$?
server_pid=""
[ "$exit_code" = 0 ] || fail "the server exited with status $exit_code on SIGTERM"
say "OK: ran, loaded $expected_total resources, exported, polled, downloaded, released, stopped"
