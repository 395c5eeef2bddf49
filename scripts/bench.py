#!/usr/bin/env python3
"""The export benchmark (issue 7), run by scripts/bench.sh: see that file for how to call it.

For each backend it loads a synthetic population in two steps (a quarter, then the rest), and
measures at both sizes, on a fresh server each time, with the database's own ceiling measured
in the same run right beside each figure:

  load        bulkfhir load                    vs  COPY FROM (Postgres) / INSERT..SELECT (SQLite)
                                                   of the same rows
  load, validation off   the same load into a fresh database with `validation = "off"`: the
              share of its speed the validated load keeps (BENCH_VALIDATION_OFF=0 skips it)
  system      GET /$export to the local dir    vs  COPY (SELECT body ...) TO STDOUT via psql
                                                   > /dev/null / sqlite3 SELECT body > /dev/null,
                                                   after one untimed read of the same (both warm)
  disk        the time this disk takes to write as many bytes as the export wrote (O_DIRECT):
              the export cannot be faster than this either
  patient     GET /Patient/$export             vs  system export
  group       GET /Group/{100 patients}/$export, at both sizes (its cost should not grow)
  de-identified  GET /$export?_anonymizationConfig= with the reference engine's R4 sample
              configuration (HIPAA Safe Harbor; tests/fixtures/anonymize/configuration-sample.json,
              keys filled in)  vs  the plain system export (goal: 100k resources/s, 256 MB)
  status      wrk on the status URL from a system export's kick-off to its completion:
              requests/s, p99

Peak RSS is the server's VmHWM over each export (reset before it through clear_refs).
Standard library only.
"""

import glob
import json
import mmap
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

BIN = os.environ["BULKFHIR_BIN"]
RESOURCES = int(os.environ.get("BENCH_RESOURCES", "1000000"))
WORK = os.environ.get("BENCH_DIR", "/tmp/bulkfhir-bench")
PG_SERVER = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
SAMPLE = os.environ.get("BENCH_SAMPLE", "tests/fixtures/synthea-r4-100")
BACKENDS = os.environ.get("BENCH_BACKENDS", "postgres,sqlite").split(",")
# The reference engine's R4 sample configuration; its keys are empty there and filled in here.
DEID_SAMPLE = os.environ.get("BENCH_DEID_CONFIG", "tests/fixtures/anonymize/configuration-sample.json")
DEID_NAME = "configuration-sample.json"
PG_DATABASE = os.environ.get("BENCH_DATABASE", "bulkfhir_bench")
# The sample's Group (all 100 patients); each copy has its own, renumbered like every id.
SAMPLE_GROUP = "d9f31445-f448-48c0-af57-295c005e07df"
COPY_OPTIONS = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
MB = 1e6

rows = []  # (backend, size, what, resources, bytes, seconds, rss, ceiling seconds, note)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(args, **kw):
    return subprocess.run(args, check=True, **kw)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def psql(url, sql, **kw):
    env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
    return run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], env=env, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, db_url, name):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.out = os.path.join(WORK, f"exports-{name}")
        self.log = open(os.path.join(WORK, f"server-{name}.log"), "a")
        env = dict(os.environ, BULKFHIR_ANONYMIZATION_DIR=os.path.join(WORK, "anonymization"),
                   BULKFHIR_ANONYMIZATION_KEY_FILE=os.path.join(WORK, "anonymization.key"))
        self.proc = subprocess.Popen(
            [BIN, "serve", "--database-url", db_url, "--listen", f"127.0.0.1:{self.port}", "--output-dir", self.out],
            stdout=self.log, stderr=self.log, env=env)
        for _ in range(600):
            try:
                urllib.request.urlopen(self.base + "/metadata", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"the server exited; see {self.log.name}")
                time.sleep(0.1)
        raise SystemExit("the server did not start")

    def reset_peak_rss(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024 / MB

    def kick_off(self, path):
        req = urllib.request.Request(self.base + path, headers={"Accept": "application/fhir+json", "Prefer": "respond-async"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 202, r.status
            return r.headers["Content-Location"]

    def wait(self, status_url):
        while True:
            with urllib.request.urlopen(status_url) as r:
                if r.status == 200:
                    return json.load(r)
            time.sleep(0.02)

    def export(self, path):
        """Kick-off to complete manifest: (resources, bytes, seconds, peak RSS MB)."""
        self.reset_peak_rss()
        start = time.perf_counter()
        status = self.kick_off(path)
        manifest = self.wait(status)
        seconds = time.perf_counter() - start
        count = sum(o["count"] for o in manifest["output"])
        job = status.rstrip("/").rsplit("/", 1)[1]
        folder = glob.glob(os.path.join(self.out, f"*-{job}"))[0]
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        rss = self.peak_rss_mb()
        self.release(status)
        return count, size, seconds, rss

    def release(self, status_url):
        urllib.request.urlopen(urllib.request.Request(status_url, method="DELETE")).read()

    def status_under_load(self):
        """wrk on the status URL of a system export, from its kick-off until it completes: wrk
        runs open-ended and is interrupted (it then reports) once the export's manifest is
        ready, so every request it times was answered while the export ran."""
        status = self.kick_off("/$export")
        start = time.perf_counter()
        wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d600s", "--latency", status], stdout=subprocess.PIPE, text=True)
        try:
            self.wait(status)
        finally:
            wrk.send_signal(signal.SIGINT)
            out = wrk.communicate(timeout=60)[0]
        seconds = time.perf_counter() - start
        self.release(status)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
        p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return rps, p99_ms, seconds, int(non_2xx.group(1)) if non_2xx else 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.out, ignore_errors=True)


def disk_write_seconds(nbytes):
    """Time to write `nbytes` of random data to the benchmark's disk with O_DIRECT in 1 MiB
    blocks, then fsync: what the disk alone needs for the export's bytes. A faster read
    ceiling than this cannot be reached by any export that writes its files to this disk.
    None where the file system refuses O_DIRECT (tmpfs before Linux 6.6)."""
    block = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
    block.write(os.urandom(1 << 20))
    path = os.path.join(WORK, "disk-write-test")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
    except OSError as e:
        log(f"disk write not timed: {e}")
        return None
    try:
        start = time.perf_counter()
        for _ in range(-(-nbytes // (1 << 20))):
            os.write(fd, block)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        os.remove(path)


def load(db_url, files, validation="strict"):
    env = dict(os.environ, BULKFHIR_VALIDATION=validation)
    with open(os.path.join(WORK, "load.log"), "a") as out:
        seconds, _ = timed(lambda: run([BIN, "load", "--database-url", db_url, *files], stdout=out, stderr=out, env=env))
    return seconds


class Postgres:
    name = "postgres"

    def __init__(self):
        self.url = PG_SERVER.rstrip("/") + "/" + PG_DATABASE
        psql(PG_SERVER, f"DROP DATABASE IF EXISTS {PG_DATABASE}")
        psql(PG_SERVER, f"CREATE DATABASE {PG_DATABASE}")

    def export_ceiling(self):
        sql = f"COPY (SELECT body FROM resources WHERE NOT deleted) TO STDOUT {COPY_OPTIONS}"
        with open(os.devnull, "wb") as null:
            return timed(lambda: psql(self.url, sql, stdout=null))[0]

    def load_ceiling(self):
        """COPY FROM of the rows the load wrote (resources and compartment rows), into copies of
        the tables with the same keys and indexes."""
        seconds = 0.0
        for table in ["resources", "compartment_members"]:
            dump = os.path.join(WORK, f"{table}.rows")
            with open(dump, "wb") as f:
                psql(self.url, f"COPY {table} TO STDOUT {COPY_OPTIONS}", stdout=f)
            psql(self.url, f"DROP TABLE IF EXISTS ceiling_{table}; CREATE TABLE ceiling_{table} (LIKE {table} INCLUDING ALL)")
            with open(dump, "rb") as f:
                seconds += timed(lambda: psql(self.url, f"COPY ceiling_{table} FROM STDIN {COPY_OPTIONS}", stdin=f))[0]
            psql(self.url, f"DROP TABLE ceiling_{table}")
            os.remove(dump)
        return seconds

    def drop(self):
        psql(PG_SERVER, f"DROP DATABASE IF EXISTS {PG_DATABASE}")


class Sqlite:
    name = "sqlite"

    def __init__(self):
        self.path = os.path.join(WORK, "bench.db")
        for suffix in ["", "-wal", "-shm"]:
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)
        self.url = "sqlite://" + self.path

    def export_ceiling(self):
        with open(os.devnull, "wb") as null:
            return timed(lambda: run(["sqlite3", self.path, "SELECT body FROM resources WHERE deleted = 0"], stdout=null))[0]

    def load_ceiling(self):
        """INSERT..SELECT of the same rows into copies of the tables (same keys and indexes), with
        the server's pragmas: SQLite's fastest way to write rows it already has."""
        ddl = [r["sql"] for r in json.loads(run(["sqlite3", "-json", self.path,
               "SELECT sql FROM sqlite_master WHERE tbl_name IN ('resources', 'compartment_members') AND sql IS NOT NULL"],
               capture_output=True, text=True).stdout)]
        ddl = [re.sub(r"\b(resources|compartment_members)\b", r"ceiling_\1", re.sub(r"INDEX (\w+)", r"INDEX ceiling_\1", d)) for d in ddl]
        setup = "DROP TABLE IF EXISTS ceiling_resources; DROP TABLE IF EXISTS ceiling_compartment_members;" + ";".join(ddl) + ";"
        run(["sqlite3", self.path, setup])
        copy = ("PRAGMA synchronous=FULL; PRAGMA cache_size=-65536; BEGIN;"
                "INSERT INTO ceiling_resources SELECT * FROM resources;"
                "INSERT INTO ceiling_compartment_members SELECT * FROM compartment_members; COMMIT;")
        seconds = timed(lambda: run(["sqlite3", self.path, copy], stdout=subprocess.DEVNULL))[0]
        run(["sqlite3", self.path, "DROP TABLE ceiling_resources; DROP TABLE ceiling_compartment_members;"])
        return seconds

    def drop(self):
        pass


def bench(db, quarter, rest, group):
    run([BIN, "migrate", "--database-url", db.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loaded_seconds = 0.0
    for step, files in [("quarter", quarter), ("full", rest)]:
        log(f"{db.name}: loading {len(files)} copies")
        loaded_seconds += load(db.url, files)
        # What the load left dirty (Postgres' shared buffers, the page cache) goes to disk now,
        # untimed, and not during the exports' direct writes.
        if db.name == "postgres":
            psql(db.url, "CHECKPOINT")
        os.sync()
        server = Server(db.url, db.name)
        try:
            size = f"{count_resources(db):,}"
            if step == "full":
                rows.append((db.name, size, "load", int(size.replace(",", "")), 0, loaded_seconds, None, db.load_ceiling(),
                             "ceiling: plain COPY FROM (SQLite: INSERT..SELECT) of the same rows"))
            log(f"{db.name}: system export at {size}")
            # Both sides read a warm cache: the ceiling's read runs once untimed first. On these
            # VMs the host reclaims pages left idle for seconds, so whichever read the table
            # first after the load paid for reading it back (SQLite 1M: 1.25 s cold, 0.85 warm).
            db.export_ceiling()
            n, b, s, rss = server.export("/$export")
            rows.append((db.name, size, "system export", n, b, s, rss, db.export_ceiling(), "ceiling: stored JSON to /dev/null"))
            rows.append((db.name, size, "disk: write the same bytes", None, b, None, None, disk_write_seconds(b),
                         "O_DIRECT, 1 MiB writes, fsync: the export's floor when above the ceiling"))
            if step == "full" and deid_config_ready():
                log(f"{db.name}: de-identified system export at {size}")
                n, b, s, rss = server.export(f"/$export?_anonymizationConfig={DEID_NAME}")
                plain = next(r[5] for r in reversed(rows) if r[0] == db.name and r[2] == "system export")
                rows.append((db.name, size, "de-identified system export", n, b, s, rss, plain,
                             "configuration-sample.json; ceiling: the plain system export"))
            log(f"{db.name}: group export at {size}")
            n, b, s, rss = server.export(f"/Group/{group}/$export")
            rows.append((db.name, size, "group export (100 patients)", n, b, s, rss, None, ""))
            if step == "full":
                log(f"{db.name}: patient export")
                system_seconds = next(r[5] for r in reversed(rows) if r[0] == db.name and r[2] == "system export")
                n, b, s, rss = server.export("/Patient/$export")
                rows.append((db.name, size, "patient export", n, b, s, rss, system_seconds, "vs system export"))
                log(f"{db.name}: status under load")
                rps, p99, seconds, errors = server.status_under_load()
                note = f"{rps:,.0f} req/s, p99 {p99:.2f} ms, over the export's {seconds:.2f} s"
                rows.append((db.name, size, "status poll under export", None, None, None, None, None,
                             note + (f", {errors} non-2xx" if errors else "")))
        finally:
            server.stop()
    db.drop()
    if os.environ.get("BENCH_VALIDATION_OFF", "1") != "0":
        # The same two loads into a fresh database, without validation: what validation costs.
        db = Postgres() if db.name == "postgres" else Sqlite()
        run([BIN, "migrate", "--database-url", db.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log(f"{db.name}: loading again with validation off")
        off_seconds = 0.0
        for files in [quarter, rest]:
            off_seconds += load(db.url, files, validation="off")
            if db.name == "postgres":
                psql(db.url, "CHECKPOINT")
            os.sync()
        n = count_resources(db)
        rows.append((db.name, f"{n:,}", "load, validation off", n, 0, off_seconds, None, None,
                     f"the validated load keeps {off_seconds / loaded_seconds:.0%} of this speed"))
        db.drop()


def deid_config_ready():
    """Puts the sample configuration, keys filled in, into the servers' anonymization folder;
    False (the row is left out) when this checkout does not have it."""
    if not os.path.exists(DEID_SAMPLE):
        log(f"no {DEID_SAMPLE}: the de-identified export is not measured")
        return False
    with open(DEID_SAMPLE) as f:
        config = json.load(f)
    config["parameters"].update(cryptoHashKey="bench-crypto-hash-key", dateShiftKey="bench-date-shift-key",
                                encryptKey="0123456789abcdef0123456789abcdef")
    os.makedirs(os.path.join(WORK, "anonymization"), exist_ok=True)
    with open(os.path.join(WORK, "anonymization", DEID_NAME), "w") as f:
        json.dump(config, f)
    return True


def count_resources(db):
    if db.name == "postgres":
        out = run(["psql", "-X", "-At", db.url, "-c", "SELECT count(*) FROM resources"], capture_output=True, text=True).stdout
    else:
        out = run(["sqlite3", db.path, "SELECT count(*) FROM resources"], capture_output=True, text=True).stdout
    return int(out.strip())


def report():
    print()
    print(f"{'backend':<9} {'resources':>10}  {'what':<28} {'count':>10} {'MB':>8} {'s':>7} {'res/s':>9} {'MB/s':>7} "
          f"{'RSS MB':>7} {'ceil s':>7} {'ratio':>6}  note")
    for backend, size, what, n, b, s, rss, ceil, note in rows:
        cells = [
            f"{n:>10,}" if n is not None else f"{'':>10}",
            f"{b / MB:>8.0f}" if b else f"{'':>8}",
            f"{s:>7.2f}" if s is not None else f"{'':>7}",
            f"{n / s:>9,.0f}" if n and s else f"{'':>9}",
            f"{b / MB / s:>7.0f}" if b and s else f"{'':>7}",
            f"{rss:>7.0f}" if rss else f"{'':>7}",
            f"{ceil:>7.2f}" if ceil else f"{'':>7}",
            # Ours as a share of the ceiling's speed (time of the ceiling over ours).
            f"{ceil / s:>6.2f}" if ceil and s else f"{'':>6}",
        ]
        print(f"{backend:<9} {size:>10}  {what:<28} {' '.join(cells)}  {note}")
    print()
    pg = subprocess.run(["psql", "-X", "-At", PG_SERVER, "-c", "SHOW server_version"], capture_output=True, text=True).stdout.strip()
    lite = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True).stdout.split()[0]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} cores, {memory:.0f} GiB; Postgres {pg}; SQLite {lite}")


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    data = os.path.join(WORK, "data")
    log(f"synthesizing {RESOURCES:,} resources")
    print(run([BIN, "synth", "--resources", str(RESOURCES), "--out", data, SAMPLE], capture_output=True, text=True).stdout.strip())
    files = sorted(glob.glob(os.path.join(data, "copy-*.ndjson")))
    cut = max(1, round(len(files) / 4))
    quarter, rest = files[:cut], files[cut:]
    if not rest:
        raise SystemExit("BENCH_RESOURCES is too small for two steps: use at least two copies of the sample")
    group = "00000001" + SAMPLE_GROUP[8:]
    try:
        for name in BACKENDS:
            bench(Postgres() if name == "postgres" else Sqlite(), quarter, rest, group)
    finally:
        report()
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
