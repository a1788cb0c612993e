#!/usr/bin/env python3
"""Gears benchmark: count users with age > 35, five ways, on one server.

Starts its own redis-server with the Gears module, loads N hashes
``user:<i>`` (name=``user<i>``, age=``i % 80``), then times:

  eval    Lua EVAL: SCAN user:* (COUNT 1000) + HGET age per key (the baseline)
  client  redis-py: SCAN (COUNT 1000) + pipelined HGETALL per page, counted here
  gears-python  RG.PYEXECUTE
  gears-lua     RG.LUAEXECUTE
  gears-rhai    RG.RHAIEXECUTE

Every method must return the exact expected count. While one extra run of
RG.PYEXECUTE (and of the EVAL baseline, for contrast) is in flight, a second
client sends PING in a loop and records the latencies.

Usage:
  .venv/bin/python bench/bench.py [--keys N] [--port P] [--server-bin redis-server]
                                  [--runs R] [--json PATH]

See bench/README.md.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PATTERN = "user:*"
SCAN_COUNT = 1000
AGE_THRESHOLD = 35

# --------------------------------------------------------------------------- scripts

LOAD_LUA = """
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = from, to - 1 do
  redis.call('HSET', 'user:' .. i, 'name', 'user' .. i, 'age', tostring(i % 80))
end
return to - from
"""

EVAL_COUNT_LUA = """
local cursor = '0'
local n = 0
local threshold = tonumber(ARGV[2])
repeat
  local res = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', tonumber(ARGV[3]))
  cursor = res[1]
  local keys = res[2]
  for i = 1, #keys do
    local age = tonumber(redis.call('HGET', keys[i], 'age'))
    if age and age > threshold then n = n + 1 end
  end
until cursor == '0'
return n
"""

PY_GEARS = (
    "GB().filter(lambda x: int(x['value']['age']) > %d)"
    ".accumulate(lambda a, x: (a or 0) + 1).run('%s')" % (AGE_THRESHOLD, PATTERN)
)
LUA_GEARS = (
    "GB():filter(function(x) return tonumber(x.value.age) > %d end)"
    ":accumulate(function(a, x) return (a or 0) + 1 end):run('%s')" % (AGE_THRESHOLD, PATTERN)
)
RHAI_GEARS = (
    "GB().filter(|x| parse_int(x.value.age) > %d)"
    '.accumulate(|a, x| if a == () { 1 } else { a + 1 }).run("%s")' % (AGE_THRESHOLD, PATTERN)
)


def expected_count(n):
    """Number of i in [0, n) with i % 80 > 35."""
    full, rest = divmod(n, 80)
    return full * (80 - AGE_THRESHOLD - 1) + max(0, rest - (AGE_THRESHOLD + 1))


# --------------------------------------------------------------------------- server


class Server:
    """A redis-server with the Gears module, owned (and always stopped) by us."""

    def __init__(self, server_bin, port, module, venv, threads):
        self.server_bin = server_bin
        self.port = port
        self.module = module
        self.venv = venv
        self.threads = threads
        self.proc = None
        self.tmpdir = tempfile.mkdtemp(prefix="gears-bench-")
        self.logpath = os.path.join(self.tmpdir, "redis.log")

    def start(self, timeout=30.0):
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            probe.ping()
        except redis.exceptions.ConnectionError:
            pass
        else:
            raise SystemExit("port %d is already in use; pick another with --port" % self.port)
        finally:
            probe.close()

        cmd = [
            self.server_bin,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.tmpdir,
            "--logfile", self.logpath,
            "--loadmodule", self.module, "PythonVenv", self.venv,
        ]
        if self.threads:
            cmd += ["ExecutionThreads", str(self.threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited with code %s:\n%s"
                                       % (self.proc.returncode, self.log_tail()))
                try:
                    if client.ping():
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer PING within %.0fs:\n%s"
                                       % (timeout, self.log_tail()))
                time.sleep(0.05)
        finally:
            client.close()

    def rss_kb(self):
        """(VmRSS, VmHWM) of the server process in KiB, from /proc (Linux only)."""
        out = {}
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        k, v = line.split(":", 1)
                        out[k] = int(v.split()[0])
        except OSError:
            pass
        return out.get("VmRSS"), out.get("VmHWM")

    def log_tail(self, lines=30):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


class Pinger(threading.Thread):
    """Sends PING in a loop on its own connection and records each round trip."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = redis.Redis(host="127.0.0.1", port=port)
        self.client.ping()  # connect before the measured window
        self.stop_event = threading.Event()
        self.latencies = []
        self.errors = {}

    def run(self):
        ping = self.client.ping
        clock = time.perf_counter
        while not self.stop_event.is_set():
            t0 = clock()
            try:
                ping()
            except redis.exceptions.ResponseError as e:  # e.g. BUSY during a long EVAL
                msg = str(e).split(" ", 1)[0]
                self.errors[msg] = self.errors.get(msg, 0) + 1
            self.latencies.append(clock() - t0)

    def stop(self):
        self.stop_event.set()
        self.join()
        self.client.close()


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ping_stats(pinger, job_seconds):
    lat = pinger.latencies
    return {
        "job_seconds": job_seconds,
        "pings": len(lat),
        "p50_ms": percentile(lat, 50) * 1e3 if lat else None,
        "p99_ms": percentile(lat, 99) * 1e3 if lat else None,
        "max_ms": max(lat) * 1e3 if lat else None,
        "errors": pinger.errors,
    }


def parse_gears_reply(reply):
    """[[results], [errors]] -> int count; raises on errors or an unexpected shape."""
    if not (isinstance(reply, list) and len(reply) == 2):
        raise RuntimeError("unexpected reply shape: %r" % (reply,))
    results, errors = reply
    if errors:
        raise RuntimeError("execution errors (%d): %r" % (len(errors), errors[:3]))
    if len(results) != 1:
        raise RuntimeError("expected one result, got %d: %r" % (len(results), results[:5]))
    value = results[0]
    if isinstance(value, bytes):
        value = value.decode()
    return int(value)


# --------------------------------------------------------------------------- methods


def make_methods(r):
    eval_sha = r.script_load(EVAL_COUNT_LUA)

    def m_eval():
        return int(r.evalsha(eval_sha, 0, PATTERN, AGE_THRESHOLD, SCAN_COUNT))

    def m_client():
        n = 0
        cursor = 0
        while True:
            cursor, keys = r.scan(cursor=cursor, match=PATTERN, count=SCAN_COUNT)
            if keys:
                pipe = r.pipeline(transaction=False)
                for k in keys:
                    pipe.hgetall(k)
                for fields in pipe.execute():
                    age = fields.get(b"age", fields.get("age")) if fields else None
                    if age is not None and int(age) > AGE_THRESHOLD:
                        n += 1
            if cursor == 0:
                return n

    def m_py():
        return parse_gears_reply(r.execute_command("RG.PYEXECUTE", PY_GEARS))

    def m_lua():
        return parse_gears_reply(r.execute_command("RG.LUAEXECUTE", LUA_GEARS))

    def m_rhai():
        return parse_gears_reply(r.execute_command("RG.RHAIEXECUTE", RHAI_GEARS))

    # (name, description, function)
    return [
        ("eval", "Lua EVAL: SCAN + HGET age (baseline)", m_eval),
        ("client", "redis-py: SCAN + pipelined HGETALL", m_client),
        ("gears-python", "RG.PYEXECUTE filter+accumulate", m_py),
        ("gears-lua", "RG.LUAEXECUTE filter+accumulate", m_lua),
        ("gears-rhai", "RG.RHAIEXECUTE filter+accumulate", m_rhai),
    ]


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def with_pinger(port, fn):
    pinger = Pinger(port)
    pinger.start()
    try:
        seconds, value = timed(fn)
    finally:
        pinger.stop()
    return seconds, value, ping_stats(pinger, seconds)


def load_keys(r, n, chunk):
    sha = r.script_load(LOAD_LUA)
    t0 = time.perf_counter()
    done = 0
    last_report = t0
    while done < n:
        to = min(n, done + chunk)
        r.evalsha(sha, 0, done, to)
        done = to
        now = time.perf_counter()
        if now - last_report > 5:
            log("  loaded %d/%d keys" % (done, n))
            last_report = now
    seconds = time.perf_counter() - t0
    size = r.dbsize()
    if size != n:
        raise RuntimeError("after loading, DBSIZE is %d, expected %d" % (size, n))
    return seconds


def log(msg):
    print(msg, flush=True)


def fmt(x, spec="%.3f"):
    return "-" if x is None else spec % x


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="number of user:<i> hashes (default 1000000)")
    ap.add_argument("--port", type=int, default=7301, help="port of the server this script starts (default 7301)")
    ap.add_argument("--server-bin", default="redis-server", help="redis-server binary (default: redis-server on PATH)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per method (default 3)")
    ap.add_argument("--module", default=os.path.join(ROOT, "target", "release", "libgears.so"),
                    help="Gears module (default target/release/libgears.so)")
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv"), help="PythonVenv for the module (default .venv)")
    ap.add_argument("--threads", type=int, default=0,
                    help="ExecutionThreads module argument (default: the module's default)")
    ap.add_argument("--load-chunk", type=int, default=20_000, help="keys per loading EVAL (default 20000)")
    ap.add_argument("--json", default=os.path.join(HERE, "results-latest.json"),
                    help="where to write the JSON results (default bench/results-latest.json)")
    ap.add_argument("--no-ping", action="store_true", help="skip the PING-latency runs")
    args = ap.parse_args()
    if args.keys < 1 or args.runs < 1:
        ap.error("--keys and --runs must be >= 1")
    if not os.path.exists(args.module):
        ap.error("module not found: %s" % args.module)

    expected = expected_count(args.keys)
    server = Server(args.server_bin, args.port, args.module, args.venv, args.threads)
    failures = []
    results = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "keys": args.keys, "runs": args.runs, "port": args.port,
            "server_bin": args.server_bin, "module": args.module, "venv": args.venv,
            "execution_threads": args.threads or "default",
            "scan_count": SCAN_COUNT, "pattern": PATTERN, "age_threshold": AGE_THRESHOLD,
        },
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(),
                 "python": platform.python_version(), "redis_py": redis.__version__},
        "expected_count": expected,
        "methods": [],
        "ping": {},
    }
    try:
        log("starting %s on 127.0.0.1:%d with %s" % (args.server_bin, args.port, args.module))
        server.start()
        log("server pid %d" % server.proc.pid)
        r = redis.Redis(host="127.0.0.1", port=args.port)
        info = r.info("server")
        results["host"]["redis_version"] = info.get("redis_version")

        log("loading %d hashes ..." % args.keys)
        load_s = load_keys(r, args.keys, args.load_chunk)
        mem = r.info("memory")
        rss, hwm = server.rss_kb()
        results["load"] = {"seconds": load_s, "used_memory": mem["used_memory"],
                           "rss_kb": rss, "hwm_kb": hwm}
        log("loaded in %.2fs (used_memory %.1f MiB, RSS %s MiB); expected count %d"
            % (load_s, mem["used_memory"] / 2**20, fmt(rss and rss / 1024, "%.1f"), expected))

        methods = make_methods(r)
        for name, desc, fn in methods:
            entry = {"name": name, "description": desc, "runs": [], "ok": True}
            results["methods"].append(entry)
            for i in range(args.runs):
                try:
                    seconds, value = timed(fn)
                except Exception as e:  # record and go on with the other methods
                    entry["ok"] = False
                    entry["error"] = "%s: %s" % (type(e).__name__, e)
                    failures.append("%s run %d raised %s" % (name, i + 1, entry["error"]))
                    log("  %-13s run %d: ERROR %s" % (name, i + 1, entry["error"]))
                    break
                entry["runs"].append(seconds)
                if value != expected:
                    entry["ok"] = False
                    entry["wrong_count"] = value
                    failures.append("%s run %d returned %r, expected %d" % (name, i + 1, value, expected))
                log("  %-13s run %d: %.3fs  count=%s%s" % (name, i + 1, seconds, value,
                                                             "" if value == expected else "  <-- WRONG"))
            rss, hwm = server.rss_kb()
            entry["rss_kb_after"], entry["hwm_kb_after"] = rss, hwm
            if entry["runs"]:
                entry["best"] = min(entry["runs"])
                entry["median"] = statistics.median(entry["runs"])

        eval_best = next((m.get("best") for m in results["methods"] if m["name"] == "eval"), None)
        for m in results["methods"]:
            if eval_best and m.get("best"):
                m["ratio_to_eval"] = m["best"] / eval_best

        if not args.no_ping:
            by_name = {name: fn for name, _, fn in methods}
            # Idle reference: PING for a short while with nothing else running.
            p = Pinger(args.port)
            p.start()
            time.sleep(1.0)
            p.stop()
            results["ping"]["idle"] = ping_stats(p, 1.0)
            for name in ("gears-python", "eval"):
                log("  %-13s extra run with a PING client ..." % name)
                try:
                    seconds, value, stats = with_pinger(args.port, by_name[name])
                except Exception as e:
                    failures.append("%s (PING run) raised %s: %s" % (name, type(e).__name__, e))
                    continue
                if value != expected:
                    failures.append("%s (PING run) returned %r, expected %d" % (name, value, expected))
                stats["count"] = value
                results["ping"][name] = stats

        mem = r.info("memory")
        rss, hwm = server.rss_kb()
        results["final_memory"] = {"used_memory": mem["used_memory"], "rss_kb": rss, "hwm_kb": hwm}
        r.close()
    finally:
        if server.proc is not None:
            log("stopping server pid %d" % server.proc.pid)
        server.stop()

    results["failures"] = failures
    results["ok"] = not failures
    report(results)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    log("\nJSON written to %s" % os.path.abspath(args.json))
    if failures:
        log("\n" + "!" * 72)
        log("BENCHMARK FAILED: methods disagree with the expected count %d" % expected)
        for msg in failures:
            log("  - " + msg)
        log("!" * 72)
        sys.exit(1)


def report(res):
    cfg = res["config"]
    log("")
    log("Gears benchmark: count hashes with age > %d among %s keys (%d runs each; "
        "redis %s, %s CPUs)" % (cfg["age_threshold"], format(cfg["keys"], ","), cfg["runs"],
                                res["host"].get("redis_version"), res["host"]["cpus"]))
    log("expected count: %s" % format(res["expected_count"], ","))
    log("")
    head = "%-13s %-38s %9s %9s %9s %6s" % ("method", "what", "best s", "median s", "x EVAL", "ok")
    log(head)
    log("-" * len(head))
    for m in res["methods"]:
        log("%-13s %-38s %9s %9s %9s %6s" % (
            m["name"], m["description"], fmt(m.get("best")), fmt(m.get("median")),
            fmt(m.get("ratio_to_eval"), "%.2f"), "yes" if m["ok"] else "NO"))
    log("(x EVAL = best time / EVAL best time; < 1 is faster than the EVAL baseline)")

    if res["ping"]:
        log("")
        head = "%-22s %8s %7s %9s %9s %9s  %s" % ("PING while ...", "job s", "pings", "p50 ms",
                                                  "p99 ms", "max ms", "errors")
        log(head)
        log("-" * len(head))
        labels = {"idle": "idle (1 s, reference)", "gears-python": "RG.PYEXECUTE runs",
                  "eval": "EVAL baseline runs"}
        for key in ("idle", "gears-python", "eval"):
            s = res["ping"].get(key)
            if not s:
                continue
            log("%-22s %8s %7d %9s %9s %9s  %s" % (
                labels[key], fmt(s["job_seconds"]), s["pings"], fmt(s["p50_ms"]),
                fmt(s["p99_ms"]), fmt(s["max_ms"]),
                ", ".join("%s x%d" % kv for kv in s["errors"].items()) or "-"))

    if "load" in res:
        ld = res["load"]
        fm = res.get("final_memory", {})
        log("")
        log("load: %.2fs; used_memory after load %.1f MiB; server RSS after load %s MiB, "
            "peak RSS %s MiB" % (ld["seconds"], ld["used_memory"] / 2**20,
                                 fmt(ld["rss_kb"] and ld["rss_kb"] / 1024, "%.0f"),
                                 fmt(fm.get("hwm_kb") and fm["hwm_kb"] / 1024, "%.0f")))

    summary = None
    by = {m["name"]: m for m in res["methods"]}
    if all(by.get(k, {}).get("best") for k in ("eval", "gears-python", "gears-lua", "gears-rhai")):
        fastest = min(res["methods"], key=lambda m: m.get("best") or float("inf"))
        summary = ("summary: EVAL %.3fs; Gears Python %.2fx, Lua %.2fx, Rhai %.2fx of EVAL; "
                   "client %.2fx; fastest: %s" % (
                       by["eval"]["best"], by["gears-python"]["ratio_to_eval"],
                       by["gears-lua"]["ratio_to_eval"], by["gears-rhai"]["ratio_to_eval"],
                       by["client"].get("ratio_to_eval") or float("nan"), fastest["name"]))
        gp = res["ping"].get("gears-python")
        ev = res["ping"].get("eval")
        if gp and ev:
            summary += "; PING max %.1f ms during RG.PYEXECUTE vs %.0f ms during EVAL" % (
                gp["max_ms"], ev["max_ms"])
        log("")
        log(summary)
    res["summary"] = summary


if __name__ == "__main__":
    main()
