#!/usr/bin/env python3
"""Gears registrations benchmark (W2): what a keyspace registration costs the writes that fire it.

redis-benchmark sends `HSET key:__rand_int__ f v` (50 clients, N requests) to one server, first
with no registration (the baseline), then with one registration that INCRs a counter per event:
sync and async, in Python, Lua and Rhai. For each it prints requests per second and p99 latency,
their ratio to the baseline, and checks that the counter equals the number of events (nothing
lost, nothing twice). For async ones it also prints how long after the load the last event was
processed. Each case runs `--rounds` times (default 3), each round a baseline run right before
the registration's run; the round with the median ratio is printed, with every round's ratio.

Targets (issue 8): sync >= 0.6x of the baseline's rps; async >= 0.9x with every event processed
within 1 s after the load stops.

On Redis 7.0 the server runs with `SyncRegistrationWrites 1` (sync registrations write inside
the keyspace notification, as RedisGears 1.2 did); on Valkey (--server-bin valkey-server) sync
registrations run as post-notification jobs.

Usage:
  .venv/bin/python bench/registrations.py [--port P] [--server-bin redis-server]
                                          [--requests N] [--clients C] [--rounds R]
                                          [--only python,lua,rhai]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import redis

from executions import Server

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SCRIPTS = {
    ("python", "sync"): ("RG.PYEXECUTE", "GB().foreach(lambda x: execute('INCR', 'counter'))"
                                         ".register(prefix='key:*', mode='sync')"),
    ("python", "async"): ("RG.PYEXECUTE", "GB().foreach(lambda x: execute('INCR', 'counter'))"
                                          ".register(prefix='key:*', mode='async')"),
    ("lua", "sync"): ("RG.LUAEXECUTE", "GB():foreach(function(x) execute('INCR', 'counter') end)"
                                       ":register('key:*', {mode = 'sync'})"),
    ("lua", "async"): ("RG.LUAEXECUTE", "GB():foreach(function(x) execute('INCR', 'counter') end)"
                                        ":register('key:*', {mode = 'async'})"),
    ("rhai", "sync"): ("RG.RHAIEXECUTE", 'GB().foreach(|x| execute("INCR", "counter"))'
                                         '.register("key:*", #{mode: "sync"})'),
    ("rhai", "async"): ("RG.RHAIEXECUTE", 'GB().foreach(|x| execute("INCR", "counter"))'
                                          '.register("key:*", #{mode: "async"})'),
}


def benchmark(port, requests, clients):
    """rps and p99 (ms) of redis-benchmark's HSET run."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests),
         "-c", str(clients), "-r", "100000", "-q", "--csv", "HSET", "key:__rand_int__", "f", "v"],
        capture_output=True, text=True, check=True).stdout
    # "HSET key:__rand_int__ f v","rps","avg","min","p50","p95","p99","max"
    fields = [f.strip('"') for f in out.strip().splitlines()[-1].split(",")]
    numbers = [float(f) for f in fields[1:] if re.match(r"^[0-9.]+$", f)]
    return numbers[0], numbers[5]


def unregister_all(r):
    for registration in r.execute_command("RG.DUMPREGISTRATIONS"):
        r.execute_command("RG.UNREGISTER", registration[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7303)
    parser.add_argument("--server-bin", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--module", default=os.path.join(ROOT, "target", "release", "libgears.so"))
    parser.add_argument("--venv", default=os.path.join(ROOT, ".venv"))
    parser.add_argument("--requests", type=int, default=200000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3,
                        help="baseline + registration pairs per case; the median ratio is shown")
    parser.add_argument("--only", default="", help="languages to run, comma-separated")
    args = parser.parse_args()
    # Redis 7.0 has no post-notification jobs: sync registrations write inside the notification
    # only with SyncRegistrationWrites 1 (RedisGears 1.2's behaviour, measured here); newer
    # servers ignore it.
    server = Server(args.server_bin, args.port, args.module, args.venv,
                    module_args=("SyncRegistrationWrites", "1"))
    failed = False
    try:
        r = server.client
        print("server: %s; redis-benchmark HSET key:__rand_int__ f v, %d clients, %d requests"
              % (r.info("server").get("redis_version"), args.clients, args.requests))
        # Warm up. This machine's speed drifts between runs, so the baseline (no registration)
        # is measured again right before each registration and each ratio uses its own.
        benchmark(args.port, args.requests // 4, args.clients)
        for (language, mode), (command, script) in SCRIPTS.items():
            if args.only and language not in args.only.split(","):
                continue
            rounds = []
            for _ in range(args.rounds):
                r.flushall()
                unregister_all(r)
                base = benchmark(args.port, args.requests, args.clients)
                r.flushall()
                r.execute_command(command, script)
                measured = benchmark(args.port, args.requests, args.clients)
                load_end = time.time()
                # Every event counted: wait for the async ones (at most 30 s).
                deadline = load_end + 30
                while int(r.get("counter") or 0) < args.requests and time.time() < deadline:
                    time.sleep(0.005)
                drained = time.time() - load_end
                counter = int(r.get("counter") or 0)
                unregister_all(r)
                rounds.append((base, measured, drained, counter))
            # The round with the median ratio stands for the case (this machine's speed drifts
            # between runs, so each ratio uses the baseline measured right before it).
            ratios = sorted(rounds, key=lambda x: x[1][0] / x[0][0])
            (base_rps, base_p99), (rps, p99), _, _ = ratios[len(ratios) // 2]
            drained = max(x[2] for x in rounds)
            lost = "".join("  COUNTER %d != %d" % (x[3], args.requests)
                           for x in rounds if x[3] != args.requests)
            failed |= bool(lost)
            print("  %-14s %9.0f rps  p99 %6.2f ms" % ("none", base_rps, base_p99))
            after = "" if mode == "sync" else "  last event %.2f s after the load" % drained
            print("  %-14s %9.0f rps  p99 %6.2f ms   rps x%.2f  p99 x%.2f%s%s   (rounds: %s)" % (
                "%s %s" % (language, mode), rps, p99, rps / base_rps, p99 / base_p99, after, lost,
                " ".join("x%.2f" % (x[1][0] / x[0][0]) for x in rounds)))
        unregister_all(r)
    finally:
        server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
