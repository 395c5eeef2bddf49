#!/usr/bin/env python3
"""Real Bulk Data clients against bulkfhir (issue 16), run by scripts/clients.sh: see that file
for how to call it.

Starts bulkfhir on a fresh SQLite database loaded with the bundled Synthea sample (which has a
Group of its 100 patients), runs every client at every level it supports, first with the server
open and then with SMART Backend Services on (keys generated here, clients registered with
`bulkfhir clients add`), and prints one line per client, level and mode: the resources the
client wrote to disk, by type, against the counts of the manifest the server built for that
client's own job (read from the server's database while the client runs, since a client may
release its job when done). Then SMART's Bulk Data Tester (bdt), open and with auth, with its
pass and fail counts. Exit status 1 when any client received other than its manifest listed.
Standard library only.
"""

import gzip
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

BIN = os.environ["BULKFHIR_BIN"]
CACHE = os.environ["CLIENTS_CACHE"]
WORK = os.environ["CLIENTS_WORK"]
BDC_DIR = os.environ.get("BULK_DATA_CLIENT_DIR", "")
BDT_DIR = os.environ.get("BDT_DIR", "")
SAMPLE = os.path.abspath(os.environ.get("CLIENTS_SAMPLE", "tests/fixtures/synthea-r4-100"))
ONLY = [c for c in os.environ.get("CLIENTS_ONLY", "").split(",") if c]
MODES = os.environ.get("CLIENTS_MODES", "open,smart").split(",")
TIMEOUT = int(os.environ.get("CLIENTS_TIMEOUT", "600"))
# Downloads are about 100 MB a run; they are deleted once counted unless kept.
KEEP = os.environ.get("CLIENTS_KEEP") == "1"
# The sample's Group: all 100 patients.
GROUP = "d9f31445-f448-48c0-af57-295c005e07df"
SCOPE = "system/*.read"

NODE20 = os.environ.get("CLIENTS_NODE20", "node")
NODE18 = os.path.join(CACHE, "npm/node_modules/node18/bin/node")
NODE22 = os.path.join(CACHE, "npm/node_modules/node22/bin/node")
MEDPLUM = os.path.join(CACHE, "npm/node_modules/@medplum/cli/dist/cjs/index.cjs")
SMART_FETCH = os.path.join(CACHE, "smart-fetch-venv/bin/smart-fetch")

results = []  # (client, level, mode, ok, text)


def log(*args):
    print("clients:", *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.db = os.path.join(WORK, "bulkfhir.db")
        self.db_url = f"sqlite://{self.db}"
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.root}/fhir"
        self.token_url = f"{self.base}/auth/token"
        self.log = open(os.path.join(WORK, "server.log"), "a")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            [BIN, "serve", "--database-url", self.db_url, "--listen", f"127.0.0.1:{self.port}", "--output-dir", os.path.join(WORK, "exports")],
            stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.base + "/metadata", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"the server did not start; see {self.log.name}")
                time.sleep(0.2)

    def cli(self, *args):
        out = subprocess.run([BIN, *args], capture_output=True, text=True, env=dict(os.environ, DATABASE_URL=self.db_url))
        if out.returncode != 0:
            raise SystemExit(f"bulkfhir {' '.join(args[:3])} failed: {out.stdout}{out.stderr}")
        return out.stdout

    def secured(self):
        metadata = json.load(urllib.request.urlopen(self.base + "/metadata"))
        return "extension" in metadata["rest"][0].get("security", {})

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def make_keys():
    """An RS384 key per client (bdt: ES384), as private JWK, JWKS, PEM and public JWKS."""
    keys = os.path.join(WORK, "keys")
    os.makedirs(keys, exist_ok=True)
    script = r"""
const crypto = require("crypto"), fs = require("fs"), path = require("path");
const [dir, ...names] = process.argv.slice(1);
for (const spec of names) {
  const [name, kind] = spec.split(":");
  const pair = kind === "ec"
    ? crypto.generateKeyPairSync("ec", { namedCurve: "P-384" })
    : crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const alg = kind === "ec" ? "ES384" : "RS384", kid = `${name}-${kind}`;
  const priv = { ...pair.privateKey.export({ format: "jwk" }), kid, alg, key_ops: ["sign"] };
  const pub = { ...pair.publicKey.export({ format: "jwk" }), kid, alg, use: "sig" };
  const write = (suffix, text) => fs.writeFileSync(path.join(dir, name + suffix), text);
  write(".private.jwk.json", JSON.stringify(priv));
  write(".jwks", JSON.stringify({ keys: [priv] })); // smart-fetch wants a .jwks or .pem name
  write(".pem", pair.privateKey.export({ format: "pem", type: "pkcs8" }));
  write(".public.jwks.json", JSON.stringify({ keys: [pub] }));
}
"""
    subprocess.run([NODE20, "-e", script, keys, "smart-fetch:rsa", "medplum:rsa", "bulk-data-client:rsa", "bdt:ec"], check=True)
    return keys


class JobWatcher:
    """Follows the jobs created while a client runs: their status and per-type output counts,
    read from the server's database, kept once seen (a client may release the job at the end)."""

    def __init__(self, db):
        self.db = db
        self.before = set(self._jobs())
        self.seen = {}  # job id -> (status, request, {type: count})
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _connect(self):
        return sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)

    def _jobs(self):
        with self._connect() as c:
            return [row[0] for row in c.execute("SELECT id FROM export_jobs")]

    def _poll(self):
        with self._connect() as c:
            for job, status, request in c.execute("SELECT id, status, request FROM export_jobs"):
                if job in self.before:
                    continue
                counts = dict(c.execute("SELECT resource_type, SUM(count) FROM export_files WHERE job_id = ? AND kind = 'output' GROUP BY resource_type", (job,)).fetchall())
                old = self.seen.get(job)
                # A completed job keeps its counts when the client deletes it afterwards.
                if old is not None and old[0] == "completed":
                    self.seen[job] = ("completed", request, counts or old[2])
                else:
                    self.seen[job] = (status, request, counts)

    def _run(self):
        while not self.stopping.is_set():
            try:
                self._poll()
            except sqlite3.Error:
                pass
            self.stopping.wait(0.2)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self._poll()
        return self.seen


def received(folder):
    """Resources per type in the NDJSON files a client wrote (gzip or not); error files and the
    clients' own logs are not resources of the export."""
    counts = {}
    for dirpath, _, files in os.walk(folder):
        if os.path.basename(dirpath) == "error":
            continue
        for name in files:
            if not re.search(r"\.(ndjson|jsonl)(\.gz)?$", name) or name.startswith("log."):
                continue
            path = os.path.join(dirpath, name)
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        kind = json.loads(line).get("resourceType")
                        if kind:
                            counts[kind] = counts.get(kind, 0) + 1
    return counts


def run_client(server, client, level, mode, args, cwd=None, env=None, before=None):
    """Runs one client export and records its line. `before` runs first (a login)."""
    if ONLY and client.split(" ")[0] not in ONLY:
        return
    label = f"{client}/{level}/{mode}".replace(" ", "-")
    out = os.path.join(WORK, "out", label.replace("/", "-"))
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(WORK, "logs", label.replace("/", "-") + ".log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    args = [a.replace("{out}", out) for a in args]
    watcher = JobWatcher(server.db)
    started = time.time()
    with open(log_path, "w") as logf:
        code = 0
        for command in ([before] if before else []) + [args]:
            logf.write("$ " + " ".join(command) + "\n")
            logf.flush()
            try:
                code = subprocess.run(command, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
            if code != 0:
                break
    seconds = time.time() - started
    jobs = watcher.stop()
    got = received(out)
    if not KEEP:
        shutil.rmtree(out, ignore_errors=True)
    completed = [v for v in jobs.values() if v[0] == "completed"]
    if not completed:
        states = ", ".join(sorted(v[0] for v in jobs.values())) or "no job"
        ok, text = False, f"FAIL  exit {code}, {states} ({log_path})"
    else:
        want = completed[-1][2]
        got_total, want_total = sum(got.values()), sum(want.values())
        ok = got == want and code == 0
        text = f"{'ok   ' if ok else 'FAIL '} {got_total:>6} of {want_total:>6} resources, {len(want):>2} types, {seconds:5.1f} s"
        if got != want:
            diff = sorted(t for t in set(got) | set(want) if got.get(t) != want.get(t))
            text += "; differ: " + ", ".join(f"{t} {got.get(t, 0)}/{want.get(t, 0)}" for t in diff[:6])
        if code != 0:
            text += f"; exit {code} ({log_path})"
        if len(completed) > 1:
            text += f"; {len(completed)} jobs"
    results.append((client, level, mode, ok, text))
    print(f"{client:<24} {level:<8} {mode:<5} {text}", flush=True)


def smart_fetch(server, mode, keys):
    auth = [] if mode == "open" else ["--smart-client-id", "smart-fetch", "--smart-key", os.path.join(keys, "smart-fetch.jwks")]
    for level, extra in (("system", []), ("Group", ["--group", GROUP])):
        run_client(server, "smart-fetch", level, mode, [SMART_FETCH, "bulk", "--fhir-url", server.base, *auth, *extra, "{out}"])


def medplum(server, mode, keys):
    home = os.path.join(WORK, "medplum-home", mode)
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, HOME=home)
    common = ["--base-url", server.root + "/", "--fhir-url-path", "fhir"]
    login = None
    if mode == "smart":
        login = [NODE22, MEDPLUM, "login", *common, "--auth-type", "jwt-assertion", "--client-id", "medplum",
                 "--private-key-path", os.path.join(keys, "medplum.pem"), "--token-url", "fhir/auth/token", "--audience", "fhir/auth/token"]
    for level, extra in (("system", []), ("Patient", ["-e", "Patient"]), ("Group", ["-e", f"Group/{GROUP}"])):
        run_client(server, "medplum", level, mode, [NODE22, MEDPLUM, "bulk", "export", *common, *extra, "-d", "{out}"], env=env, before=login)


def bulk_data_client(server, mode, keys):
    if not BDC_DIR:
        log("bulk-data-client: skipped (give its checkout with --bulk-data-client DIR or BULK_DATA_CLIENT_DIR)")
        return
    for node, name in ((NODE18, "bulk-data-client node18"), (NODE20, "bulk-data-client node20")):
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        for level, extra in (("system", ["--global"]), ("Patient", []), ("Group", ["-g", GROUP])):
            label = f"{name}-{level}-{mode}"
            config = os.path.join(WORK, "configs", label + ".js")
            os.makedirs(os.path.dirname(config), exist_ok=True)
            settings = {"fhirUrl": server.base, "reporter": "text", "scope": SCOPE, "downloadAttachments": False}
            if mode == "open":
                settings["tokenUrl"] = "none"
            else:
                with open(os.path.join(keys, "bulk-data-client.private.jwk.json")) as f:
                    settings.update(tokenUrl=server.token_url, clientId="bulk-data-client", privateKey=json.load(f))
            out = os.path.join(WORK, "out", f"{name}/{level}/{mode}".replace(" ", "-").replace("/", "-"))
            settings["destination"] = out
            with open(config, "w") as f:
                f.write("module.exports = " + json.dumps(settings, indent=2) + ";\n")
            run_client(server, name, level, mode, [node, "built/app.js", "--config", config, *extra], cwd=BDC_DIR)
        log(f"{name}: {version}")


def bdt(server, mode, keys):
    if not BDT_DIR:
        log("bdt: skipped (give its checkout with --bdt DIR or BDT_DIR)")
        return
    if ONLY and "bdt" not in ONLY:
        return
    config = {
        "baseURL": server.base,
        "systemExportEndpoint": "$export",
        "patientExportEndpoint": "Patient/$export",
        "groupExportEndpoint": f"Group/{GROUP}/$export",
        "fastestResource": "Patient",
        "requests": {"strictSSL": False, "timeout": 30000},
    }
    if mode == "open":
        config["authentication"] = {"type": "none", "optional": True}
    else:
        with open(os.path.join(keys, "bdt.private.jwk.json")) as f:
            key = json.load(f)
        config["authentication"] = {
            "type": "backend-services", "optional": False, "tokenEndpoint": server.token_url, "clientId": "bdt",
            "privateKey": key, "scope": SCOPE, "tokenSignAlgorithm": "ES384", "tokenExpiresIn": "5m",
        }
    path = os.path.join(WORK, "configs", f"bdt-{mode}.js")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("module.exports = " + json.dumps(config, indent=2) + ";\n")
    report = os.path.join(WORK, "logs", f"bdt-{mode}.log")
    os.makedirs(os.path.dirname(report), exist_ok=True)
    with open(report, "w") as f:
        subprocess.run([NODE20, "build/lib/bin.js", "test", "-c", path, "-C", "-w", "200"], cwd=BDT_DIR, stdout=f, stderr=subprocess.STDOUT, timeout=1800)
    with open(report) as f:
        summary = dict(re.findall(r"^\s*(succeeded tests|failed tests|not supported tests|skipped tests): (\d+)", f.read(), re.M))
    if not summary:
        text = f"no summary: bdt did not finish ({report})"
    else:
        text = f"{summary['succeeded tests']} passed, {summary['failed tests']} failed, {summary['not supported tests']} not supported, {summary['skipped tests']} skipped ({report})"
    print(f"{'bdt':<24} {'all':<8} {mode:<5} {text}", flush=True)


def main():
    os.makedirs(WORK, exist_ok=True)
    log(f"work folder {WORK}")
    server = Server()
    log(f"server at {server.base}; loading {SAMPLE}")
    server.cli("load", SAMPLE)
    keys = make_keys()
    try:
        for mode in ("open", "smart"):
            if mode not in MODES:
                continue
            if mode == "smart":
                for client in ("smart-fetch", "medplum", "bulk-data-client", "bdt"):
                    server.cli("clients", "add", client, "--jwks", os.path.join(keys, f"{client}.public.jwks.json"), "--scope", SCOPE)
                deadline = time.time() + 10
                while not server.secured():
                    if time.time() > deadline:
                        raise SystemExit("authorization did not turn on after registering the clients")
                    time.sleep(0.2)
            smart_fetch(server, mode, keys)
            medplum(server, mode, keys)
            bulk_data_client(server, mode, keys)
            bdt(server, mode, keys)
    finally:
        server.stop()
        if not KEEP:
            shutil.rmtree(os.path.join(WORK, "exports"), ignore_errors=True)
    failed = [r for r in results if not r[3]]
    log(f"{len(results) - len(failed)} of {len(results)} client runs received every resource of their manifest")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
