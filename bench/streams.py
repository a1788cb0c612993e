#!/usr/bin/env python3
"""Gears stream processing benchmark (W3): a StreamReader registration against a client-side
consumer, while redis-benchmark appends to the stream.

redis-benchmark sends `XADD s * f v` (20 clients, N requests) to one server:
- alone: the XADD ceiling;
- while a StreamReader registration (batch 100) INCRs a counter per entry, in Python, Lua
  and Rhai;
- while a client-side consumer (redis-py in its own process: XREADGROUP COUNT 100, then one
  pipeline of an INCR per entry and the XACK) does the same.
For each it prints the XADD rate while consuming (and its ratio to the ceiling), the entries
processed per second (N / time from the start of the load until the counter reaches N; the
ratio to the client-side consumer) and the entries lost (N - counter; must be 0).

Targets (issue 9): Gears processes at least 1.5x the client-side consumer's rate and keeps XADD
within 0.8x of the ceiling.

Usage:
  .venv/bin/python bench/streams.py [--port P] [--server-bin redis-server] [--requests N]
                                    [--clients C] [--rounds R] [--only python,lua,rhai]
"""

import argparse
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import redis

from executions import Server

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SCRIPTS = {
    "python": ("RG.PYEXECUTE", "GB('StreamReader').foreach(lambda x: execute('INCR', 'counter'))"
                               ".register('s', batch=100)"),
    "lua": ("RG.LUAEXECUTE", "GB('StreamReader'):foreach(function(x) execute('INCR', 'counter') end)"
                             ":register('s', {batch = 100})"),
    "rhai": ("RG.RHAIEXECUTE", 'GB("StreamReader").foreach(|x| execute("INCR", "counter"))'
                               '.register("s", #{batch: 100})'),
}


def xadd_load(port, requests, clients):
    """redis-benchmark's XADD rate (requests per second)."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests),
         "-c", str(clients), "-q", "--csv", "XADD", "s", "*", "f", "v"],
        capture_output=True, text=True, check=True).stdout
    fields = [f.strip('"') for f in out.strip().splitlines()[-1].split(",")]
    numbers = [float(f) for f in fields[1:] if re.match(r"^[0-9.]+$", f)]
    return numbers[0]


def client_consumer(port, total, ready):
    """The client-side baseline: XREADGROUP COUNT 100, then INCR per entry and XACK, pipelined."""
    r = redis.Redis(host="127.0.0.1", port=port)
    r.xgroup_create("s", "g", id="0", mkstream=True)
    ready.set()
    done = 0
    while done < total:
        reply = r.xreadgroup("g", "c", {"s": ">"}, count=100, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        pipe = r.pipeline(transaction=False)
        for _ in entries:
            pipe.incr("counter")
        pipe.xack("s", "g", *[entry_id for entry_id, _ in entries])
        pipe.execute()
        done += len(entries)


def measure(r, port, requests, clients, start_consumer=None):
    """Runs the XADD load; returns (XADD rps, entries processed per second, entries lost)."""
    result = {}

    def load():
        result["rps"] = xadd_load(port, requests, clients)

    started = time.time()
    loader = threading.Thread(target=load)
    loader.start()
    deadline = started + 120
    while int(r.get("counter") or 0) < requests and time.time() < deadline:
        time.sleep(0.002)
    processed_at = time.time()
    loader.join()
    counter = int(r.get("counter") or 0)
    return result["rps"], counter / (processed_at - started), requests - counter


def unregister_all(r):
    for registration in r.execute_command("RG.DUMPREGISTRATIONS"):
        r.execute_command("RG.UNREGISTER", registration[1])


def one_round(r, args, failed):
    """Measures the ceiling, the client-side consumer and each language once; returns the
    ratios {name: (XADD / ceiling, processed / client's processed)}."""
    xadd_load(args.port, args.requests // 4, args.clients)  # warm up
    r.flushall()
    ceiling = xadd_load(args.port, args.requests, args.clients)
    print("  %-22s XADD %9.0f rps" % ("XADD alone (ceiling)", ceiling))

    r.flushall()
    ready = multiprocessing.Event()
    consumer = multiprocessing.Process(target=client_consumer,
                                       args=(args.port, args.requests, ready))
    consumer.start()
    ready.wait(10)
    rps, client_rate, lost = measure(r, args.port, args.requests, args.clients)
    consumer.join(30)
    if consumer.is_alive():
        consumer.kill()
    failed.append(lost != 0)
    ratios = {"client": (rps / ceiling, 1.0)}
    print("  %-22s XADD %9.0f rps x%.2f   processed %9.0f/s          lost %d" % (
        "client-side consumer", rps, rps / ceiling, client_rate, lost))

    for language, (command, script) in SCRIPTS.items():
        if args.only and language not in args.only.split(","):
            continue
        r.flushall()
        unregister_all(r)
        r.execute_command(command, script)
        rps, rate, lost = measure(r, args.port, args.requests, args.clients)
        failed.append(lost != 0)
        ratios[language] = (rps / ceiling, rate / client_rate)
        print("  %-22s XADD %9.0f rps x%.2f   processed %9.0f/s x%.2f   lost %d" % (
            "gears " + language, rps, rps / ceiling, rate, rate / client_rate, lost))
    unregister_all(r)
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7304)
    parser.add_argument("--server-bin", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--module", default=os.path.join(ROOT, "target", "release", "libgears.so"))
    parser.add_argument("--venv", default=os.path.join(ROOT, ".venv"))
    parser.add_argument("--requests", type=int, default=200000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each with its own ceiling and client-side baseline; the "
                             "summary gives each ratio's median (this VM's speed drifts)")
    parser.add_argument("--only", default="", help="languages, comma-separated (default: all)")
    args = parser.parse_args()
    server = Server(args.server_bin, args.port, args.module, args.venv)
    failed = []
    rounds = []
    try:
        r = server.client
        print("server: %s; redis-benchmark XADD s * f v, %d clients, %d entries"
              % (r.info("server").get("redis_version"), args.clients, args.requests))
        for n in range(args.rounds):
            print("round %d" % (n + 1))
            rounds.append(one_round(r, args, failed))
    finally:
        server.stop()
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    print("median over %d rounds (XADD / ceiling, processed / client-side consumer's):" % len(rounds))
    for name in rounds[0]:
        xadd = [ratios[name][0] for ratios in rounds]
        processed = [ratios[name][1] for ratios in rounds]
        print("  %-22s XADD x%.2f (%s)   processed x%.2f (%s)" % (
            name, median(xadd), " ".join("%.2f" % x for x in xadd),
            median(processed), " ".join("%.2f" % x for x in processed)))
    return 1 if any(failed) else 0


if __name__ == "__main__":
    sys.exit(main())
