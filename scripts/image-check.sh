#!/usr/bin/env bash
# Proves the container image starts, without a Docker daemon: builds the Dockerfile's runtime
# stage from Debian packages (mmdebstrap of its base release, then the stage's own RUN steps in
# a chroot), copies the binary in where its COPY puts it, and runs it there as the stage's USER
# with its ENV and WORKDIR, bulkfhir as PID 1 of its own PID namespace: the HEALTHCHECK passes,
# the bundled sample loads, and a system export runs to its manifest and downloads in full.
#   scripts/image-check.sh [BINARY]   (default: target/release/bulkfhir, else target/debug/...)
# Needs root, mmdebstrap (apt-get install mmdebstrap), Debian's mirror and python3; the binary
# must be built against the base's glibc (bookworm), as the Dockerfile's builder stage does.
# The root file system is cached under target/, keyed by the stage's text.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '[%4ds] %s\n' $((SECONDS - started)) "$*"; }

target="${CARGO_TARGET_DIR:-target}"
binary="${1:-}"
if [ -z "$binary" ]; then
    for candidate in "$target/release/bulkfhir" "$target/debug/bulkfhir"; do
        if [ -x "$candidate" ]; then binary=$candidate; break; fi
    done
fi
[ -n "$binary" ] && [ -x "$binary" ] || { echo "image-check: no binary; build one (cargo build --release) or name it" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "image-check: needs root (chroot, namespaces)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "image-check: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }

# The runtime stage (after the last FROM), as shell variables: Docker's parsing of what this
# Dockerfile uses (continuations, comments, JSON and shell forms).
eval "$(python3 - Dockerfile <<'PY'
import json, re, shlex, sys
lines, joined = [], ""
for raw in open(sys.argv[1]):
    line = raw.rstrip("\n")
    if line.lstrip().startswith("#"):
        continue
    if line.endswith("\\"):
        joined += line[:-1] + " "
        continue
    joined += line
    if joined.strip():
        lines.append(joined.strip())
    joined = ""
stage = [l for i, l in enumerate(lines) if i >= max(j for j, l in enumerate(lines) if l.upper().startswith("FROM "))]
q = shlex.quote
out, env, runs, key = [], [], [], []
def words(args):
    return json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]
for instruction in stage:
    op, _, args = instruction.partition(" ")
    op, args = op.upper(), args.strip()
    if op == "FROM":
        image = args.split()[0]
        out.append(f"base={q(image)}")
        key.append(instruction)
    elif op == "RUN":
        exports = "".join(f"export {q(kv)}; " for kv in env)
        runs.append(exports + args)
        key.append(instruction)
    elif op == "ENV":
        env.extend(shlex.split(args))
    elif op == "USER":
        out.append(f"user={q(args)}")
    elif op == "WORKDIR":
        out.append(f"workdir={q(args)}")
    elif op == "COPY":
        parts = args.split()
        if not (parts[0] == "--from=builder" and parts[1].endswith("/bulkfhir")):
            sys.exit(f"image-check: unsupported COPY: {args}")
        out.append(f"copy_to={q(parts[-1])}")
    elif op == "HEALTHCHECK":
        command = re.sub(r"^(--\S+\s+)*CMD\s+", "", args)
        out.append("healthcheck=(" + " ".join(q(w) for w in words(command)) + ")")
    elif op == "ENTRYPOINT":
        out.append("entrypoint=(" + " ".join(q(w) for w in words(args)) + ")")
    elif op == "CMD":
        out.append("cmd=(" + " ".join(q(w) for w in words(args)) + ")")
    elif op not in ("EXPOSE", "VOLUME", "LABEL", "ARG", "STOPSIGNAL"):
        sys.exit(f"image-check: unsupported instruction {op}")
out.append("runs=(" + " ".join(q(r) for r in runs) + ")")
out.append("image_env=(" + " ".join(q(e) for e in env) + ")")
import hashlib
out.append("stage_key=" + hashlib.sha256("\n".join(key).encode()).hexdigest()[:12])
print("\n".join(out))
PY
)"
[[ "$base" =~ ^debian:([a-z]+)(-slim)?$ ]] || { echo "image-check: the runtime base $base is not a Debian image" >&2; exit 1; }
suite=${BASH_REMATCH[1]}
uid=${user%%:*} gid=${user#*:}

cache="$target/image-check"
key=$(cat <(echo "$stage_key") "$0" | sha256sum | cut -c1-12)
rootfs="$cache/rootfs-$suite-$key"
build_log="$cache/build.log"
mkdir -p "$cache"
if [ ! -e "$rootfs/.complete" ]; then
    step "building the $base root file system ($suite, minbase like the slim image) into $rootfs"
    rm -rf "$rootfs"
    # The slim image's sources: the release, its updates and security updates.
    mmdebstrap --quiet --variant=minbase \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        "$suite" "$rootfs" \
        "deb http://deb.debian.org/debian $suite main" \
        "deb http://deb.debian.org/debian $suite-updates main" \
        "deb http://deb.debian.org/debian-security $suite-security main"
    # The official image's apt settings: no package cache or translations left in the image.
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    for run in "${runs[@]}"; do
        step "RUN ${run:0:100}... (output: $build_log)"
        unshare --mount --pid --fork --mount-proc="$rootfs/proc" chroot "$rootfs" /usr/bin/env -i \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/sh -c "$run" >>"$build_log" 2>&1 || { tail -n 20 "$build_log" >&2; exit 1; }
    done
    step "root file system: $(du -sh "$rootfs" | cut -f1)"
    touch "$rootfs/.complete"
else
    step "using the cached root file system $rootfs"
fi

# Each check runs on a copy, so the cache stays as the image was built.
root="$cache/run"
rm -rf "$root"
cp -a "$rootfs" "$root"
install -m 0755 "$binary" "$root$copy_to"
step "copied $binary ($(du -h "$binary" | cut -f1)) to $copy_to"
[ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || { echo "image-check: the image has no CA store" >&2; exit 1; }
cp -r tests/fixtures/synthea-r4-100 "$root/tmp/sample"
chmod -R a+rX "$root/tmp/sample"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
home=$(awk -F: -v uid="$uid" '$3 == uid { print $6 }' "$root/etc/passwd")
# As `docker run -e BULKFHIR_LISTEN=... -e BULKFHIR_BASE_URL=...` would: the image's ENV, then
# the run's, as the image's user in its WORKDIR. Sets `command` to the whole command line.
as_image_user() {
    command=(unshare --mount --pid --fork --mount-proc="$root/proc" chroot --userspec="$uid:$gid" "$root"
        /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" "${image_env[@]}"
        BULKFHIR_LISTEN="127.0.0.1:$port" BULKFHIR_BASE_URL="http://127.0.0.1:$port/fhir"
        /bin/sh -c 'cd "$1" && shift && exec "$@"' - "$workdir" "$@")
}

step "loading the bundled sample as uid $uid"
as_image_user "${entrypoint[@]}" load /tmp/sample
"${command[@]}" 2>"$cache/load.log" | tail -n 1

log="$cache/serve.log"
step "starting: ${entrypoint[*]} ${cmd[*]} (log: $log)"
as_image_user "${entrypoint[@]}" "${cmd[@]}"
"${command[@]}" >"$log" 2>&1 &
namespace=$!
# PID 1 of the namespace (after its execs, bulkfhir itself): what `docker stop` signals.
sleep 0.2
pid=$(pgrep -P "$namespace") || { echo "image-check: the server exited at once" >&2; cat "$log" >&2; exit 1; }
trap 'kill "$pid" 2>/dev/null; wait "$namespace" 2>/dev/null || true' EXIT

as_image_user "${healthcheck[@]}"
deadline=$((SECONDS + 30))
until "${command[@]}" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        echo "image-check: the HEALTHCHECK did not pass; GET /readyz answers $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    sleep 0.5
done
step "HEALTHCHECK passes; the server runs as uid $(ps -o uid= -p "$pid" | tr -d ' ')"

base_url="http://127.0.0.1:$port/fhir"
status_url=$(curl -sS -o /dev/null -w '%header{content-location}' -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$base_url/\$export")
[ -n "$status_url" ] || { echo "image-check: the kick-off gave no status URL" >&2; exit 1; }
step "kicked off a system export: $status_url"
deadline=$((SECONDS + 120))
while :; do
    code=$(curl -sS -o "$cache/manifest.json" -w '%{http_code}' "$status_url")
    [ "$code" = 200 ] && break
    [ "$code" = 202 ] && [ $SECONDS -lt $deadline ] || { echo "image-check: status answered $code" >&2; cat "$cache/manifest.json" >&2; exit 1; }
    sleep 0.5
done
python3 - "$cache/manifest.json" <<'PY'
import json, sys, urllib.request
manifest = json.load(open(sys.argv[1]))
files, lines = len(manifest["output"]), 0
for entry in manifest["output"]:
    body = urllib.request.urlopen(entry["url"]).read().decode()
    count = body.count("\n")
    assert count == entry["count"], f"{entry['url']}: {count} lines, manifest says {entry['count']}"
    lines += count
print(f"         downloaded {files} files, {lines} resources, each file's count as the manifest says")
PY
step "export done; stopping the server (SIGTERM to PID 1)"
kill "$pid"
wait "$namespace" || true
trap - EXIT
grep -q 'shutting down' "$log" && step "it shut down gracefully" || { echo "image-check: no graceful shutdown in the log" >&2; exit 1; }
step "image check passed"
