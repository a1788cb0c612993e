#!/usr/bin/env python3
"""Gears executions benchmark: how fast an abort stops each kind of code, how the server answers
while every worker is busy, and what an error flood costs. Every figure is printed with its
baseline, measured in the same run on the same server:

  abort latency   RG.ABORTEXECUTION + RG.GETRESULTSBLOCKING of a runaway execution, per kind of
                  code; baseline: the same two commands on an execution that already finished
                  (the round trips alone)
  PING            p50 / p99 / max while 3 runaway loops run and 10 executions wait in the
                  queue; baseline: PING on the idle server
  error flood     a pipeline whose callback fails on every one of N keys; baseline: the same
                  pipeline without the error (reply size and time)

Usage:
  .venv/bin/python bench/executions.py [--port P] [--server-bin redis-server] [--trials T]
                                       [--flood-keys N]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LOOPS = {
    "python loop": ("RG.PYEXECUTE",
                    "GB('ShardsIDReader').map(lambda x: [1 for _ in iter(int, 1)]).run()"),
    "python time.sleep": ("RG.PYEXECUTE",
                          "import time\n"
                          "def f(x):\n"
                          "    while True:\n"
                          "        time.sleep(0.5)\n"
                          "GB('ShardsIDReader').foreach(f).run()"),
    "lua loop": ("RG.LUAEXECUTE",
                 "GB('ShardsIDReader'):map(function(x) while true do end end):run()"),
    "lua pattern": ("RG.LUAEXECUTE",
                    "GB('ShardsIDReader'):map(function(x) return string.find(string.rep('a', 40), "
                    "string.rep('a*', 40) .. 'b') end):run()"),
    "rhai loop": ("RG.RHAIEXECUTE", 'GB("ShardsIDReader").map(|x| { loop {} }).run();'),
    "reader scanning": ("RG.PYEXECUTE", "GB().filter(lambda x: False).run('scan:*')"),
}


class Server:
    def __init__(self, binary, port, module, venv, module_args=()):
        self.dir = tempfile.mkdtemp(prefix="gears-bench-exec-")
        self.port = port
        self.proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "log"),
             "--enable-debug-command", "local", "--loadmodule", module, "PythonVenv", venv,
             *module_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        deadline = time.time() + 30
        while True:
            try:
                self.client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def status(r, execution):
    for entry in r.execute_command("RG.DUMPEXECUTIONS"):
        if entry[1] == execution:
            return entry[3]
    return None


def wait_running(r, execution):
    deadline = time.time() + 10
    while status(r, execution) != "running":
        if time.time() > deadline:
            raise SystemExit("execution %s did not start" % execution)
        time.sleep(0.002)


def abort_and_wait(r, execution):
    started = time.perf_counter()
    r.execute_command("RG.ABORTEXECUTION", execution)
    reply = r.execute_command("RG.GETRESULTSBLOCKING", execution)
    took = time.perf_counter() - started
    r.execute_command("RG.DROPEXECUTION", execution)
    return took, reply


def ms(seconds):
    return "%7.2f ms" % (seconds * 1000)


def bench_abort(r, trials):
    baseline = []
    for _ in range(trials):
        execution = r.execute_command("RG.LUAEXECUTE", "GB('ShardsIDReader'):run()", "UNBLOCKING")
        r.execute_command("RG.GETRESULTSBLOCKING", execution)
        took, _ = abort_and_wait(r, execution)
        baseline.append(took)
    base = statistics.median(baseline)
    print("abort latency (median / max of %d; ratio = median / baseline median)" % trials)
    print("  %-20s %s / %s" % ("baseline (finished)", ms(base), ms(max(baseline))))
    figures = {}
    for name, (command, script) in LOOPS.items():
        samples = []
        for _ in range(trials):
            execution = r.execute_command(command, script, "UNBLOCKING")
            wait_running(r, execution)
            time.sleep(0.05)
            took, reply = abort_and_wait(r, execution)
            if reply != [[], ["Execution was aborted"]]:
                raise SystemExit("%s: unexpected reply %r" % (name, reply))
            samples.append(took)
        figures[name] = samples
        print("  %-20s %s / %s   x%.1f" % (name, ms(statistics.median(samples)), ms(max(samples)),
                                          statistics.median(samples) / base))
    # A queued execution: three loops hold the workers.
    holders = [r.execute_command(c, s, "UNBLOCKING")
               for c, s in (LOOPS["python loop"], LOOPS["lua loop"], LOOPS["rhai loop"])]
    samples = []
    for _ in range(trials):
        execution = r.execute_command("RG.LUAEXECUTE", "GB('ShardsIDReader'):run()", "UNBLOCKING")
        took, _ = abort_and_wait(r, execution)
        samples.append(took)
    for execution in holders:
        abort_and_wait(r, execution)
    print("  %-20s %s / %s   x%.1f" % ("queued", ms(statistics.median(samples)), ms(max(samples)),
                                      statistics.median(samples) / base))
    return figures


def pings(r, count):
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        r.ping()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1], samples[-1]


def bench_ping(r, server, count):
    client = redis.Redis(host="127.0.0.1", port=server.port)
    idle = pings(client, count)
    holders = [r.execute_command(c, s, "UNBLOCKING")
               for c, s in (LOOPS["python loop"], LOOPS["lua loop"], LOOPS["rhai loop"])]
    for execution in holders:
        wait_running(r, execution)
    queued = [r.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING")
              for _ in range(10)]
    busy = pings(client, count)
    for execution in holders + queued:
        abort_and_wait(r, execution)
    print("PING, %d round trips (p50 / p99 / max)" % count)
    print("  idle (baseline)      %s / %s / %s" % tuple(ms(x) for x in idle))
    print("  3 running, 10 queued %s / %s / %s   p99 x%.1f" % (
        tuple(ms(x) for x in busy) + (busy[1] / idle[1],)))


def bench_flood(r, keys):
    r.flushall()
    with r.pipeline(transaction=False) as p:
        for i in range(keys):
            p.set("f:%d" % i, i)
            if i % 10000 == 9999:
                p.execute()
        p.execute()
    raw = redis.Redis(host="127.0.0.1", port=r.connection_pool.connection_kwargs["port"])

    def run(script):
        started = time.perf_counter()
        reply = raw.execute_command("RG.PYEXECUTE", script)
        took = time.perf_counter() - started
        size = sum(len(x) for part in reply for x in part)
        return took, size, reply

    good_time, good_size, good = run("GB().map(lambda x: x['key']).run('f:*')")
    bad_time, bad_size, bad = run("GB().map(lambda x: x['kye']).run('f:*')")
    if len(good[0]) != keys or len(bad[1]) != 101:
        raise SystemExit("error flood: unexpected replies")
    print("error flood over %d keys (a typo in the callback)" % keys)
    print("  no error (baseline)  %s, reply %8d bytes of results" % (ms(good_time), good_size))
    print("  every record fails   %s, reply %8d bytes of errors   time x%.2f, size x%.3f" % (
        ms(bad_time), bad_size, bad_time / good_time, bad_size / good_size))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7302)
    parser.add_argument("--server-bin", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--module", default=os.path.join(ROOT, "target", "release", "libgears.so"))
    parser.add_argument("--venv", default=os.path.join(ROOT, ".venv"))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--flood-keys", type=int, default=200000)
    args = parser.parse_args()
    server = Server(args.server_bin, args.port, args.module, args.venv)
    try:
        r = server.client
        print("server: %s" % r.info("server").get("redis_version"))
        r.execute_command("DEBUG", "POPULATE", "300000", "scan")
        bench_abort(r, args.trials)
        bench_ping(r, server, args.pings)
        bench_flood(r, args.flood_keys)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
