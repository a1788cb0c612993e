#!/usr/bin/env python3
"""Gears on Redis Cluster (W4): what distributing a run costs, on one machine.

It loads N hashes `user:<i>` (`age` = i % 80) into a single instance and into a loopback
3-master cluster (same machine), then runs on each:
- `count`: `GB().filter(lambda x: int(x['value']['age']) > 35).count().run('user:*')` (W1's
  query), and
- `countby`: `GB().countby(lambda x: x['value']['age']).run('user:*')` (partial counts per
  shard, merged after a collect, 80 groups), and
- `groupby`: the same with a Python reducer (`groupby(extractor, reducer)`: every record is
  repartitioned to the shard that owns its group's key, then reduced there),
checking every answer against the known one. It prints seconds, records per second, the bytes
the shards sent each other over the cluster bus per run (`INFO gears`: `rg_cluster_bytes_sent`),
and the ratio 3-shard / 1-shard.

On a 2-core machine three shards can not be faster than one (they share the cores); the target
(issue 10) is cost: 3 shards <= 1.3x the single instance for `count`, <= 2x for `countby`.

Usage:
  .venv/bin/python bench/cluster.py [--keys N] [--runs R]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from cluster import Cluster  # noqa: E402
from conftest import RedisServer  # noqa: E402

QUERIES = {
    "count": "GB().filter(lambda x: int(x['value']['age']) > 35).count().run('user:*')",
    "countby": "GB().countby(lambda x: x['value']['age']).run('user:*')",
    # A Python reducer: records repartitioned by key, then reduced where their key lives.
    "groupby": "GB().groupby(lambda x: x['value']['age'], lambda k, a, r: (a or 0) + 1).run('user:*')",
}


def expected(keys):
    over = sum(1 for i in range(keys) if i % 80 > 35)
    groups = {}
    for i in range(keys):
        groups[str(i % 80)] = groups.get(str(i % 80), 0) + 1
    return over, groups


def load(clients, keys):
    """Loads the hashes, pipelined per node (each node gets the keys of its slots)."""
    for client, mine in clients:
        pipe = client.pipeline(transaction=False)
        n = 0
        for i in mine:
            pipe.hset("user:%d" % i, mapping={"name": "user%d" % i, "age": str(i % 80)})
            n += 1
            if n % 5000 == 0:
                pipe.execute()
        pipe.execute()


def bus_bytes(nodes):
    """Bytes Gears sent over the cluster bus, on every node (`INFO gears`)."""
    return sum(int(node.client.info("rg").get("rg_cluster_bytes_sent", 0)) for node in nodes)


def run(client, query):
    started = time.time()
    reply = client.execute_command("RG.PYEXECUTE", query)
    return time.time() - started, reply


def check(name, reply, keys):
    over, groups = expected(keys)
    results, errors = reply
    assert errors == [], errors
    if name == "count":
        assert results == [str(over)], results
        return
    else:
        got = {}
        for r in results:
            d = eval(r)  # "{'key': '12', 'value': 1250}"
            got[d["key"]] = d["value"]
        assert got == groups, (len(got), len(groups))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    module_args = ("ExecutionMaxIdleTime", "60000")
    single = RedisServer(extra_args=module_args)
    cluster = None
    try:
        load([(single.new_client(), range(args.keys))], args.keys)
        cluster = Cluster(masters=3, module_args=module_args)
        # Each master gets its own keys (no redirections while loading).
        slots = {}
        for node in cluster.masters:
            for start, end, *_ in node.client.execute_command("CLUSTER", "SLOTS"):
                slots[(start, end)] = _[0][1]
            break
        by_port = {n.port: [] for n in cluster.masters}
        keyslot = cluster.masters[0].client
        ports = sorted(slots.items())
        for i in range(args.keys):
            slot = crc_slot("user:%d" % i)
            for (start, end), port in ports:
                if start <= slot <= end:
                    by_port[port].append(i)
                    break
        load([(n.new_client(decode_responses=True), by_port[n.port]) for n in cluster.masters], args.keys)
        print("%d hashes; 1 instance vs a 3-master cluster on this machine (%d cores)"
              % (args.keys, os.cpu_count()))
        for name, query in QUERIES.items():
            one = []
            for _ in range(args.runs):
                seconds, reply = run(single.new_client(), query)
                check(name, reply, args.keys)
                one.append(seconds)
            three = []
            before = bus_bytes(cluster.masters)
            pings = PingWatch(cluster.masters)
            for _ in range(args.runs):
                seconds, reply = run(cluster.masters[0].new_client(), query)
                check(name, reply, args.keys)
                three.append(seconds)
            slowest, failing = pings.stop()
            moved = (bus_bytes(cluster.masters) - before) / args.runs
            a, b = min(one), min(three)
            print("  %-8s 1 shard %6.2f s (%9.0f rec/s)   3 shards %6.2f s (%9.0f rec/s)   "
                  "bus bytes/run %9.0f   ratio %.2fx" % (
                      name, a, args.keys / a, b, args.keys / b, moved, b / a))
            print("           while it ran: slowest PING to a shard %.0f ms; nodes flagged failing: %s"
                  % (slowest * 1000, failing or "none"))
    finally:
        single.stop()
        if cluster:
            cluster.stop()


class PingWatch:
    """PINGs every node from a thread while the runs go on, and watches whether any node
    flags another as failing (gossip and failure detection must keep working)."""

    def __init__(self, nodes):
        import threading
        self.nodes = nodes
        self.done = False
        self.slowest = 0.0
        self.failing = set()
        self.thread = threading.Thread(target=self.watch)
        self.thread.start()

    def watch(self):
        clients = [n.new_client() for n in self.nodes]
        while not self.done:
            for c in clients:
                started = time.time()
                c.ping()
                self.slowest = max(self.slowest, time.time() - started)
                for line in c.execute_command("CLUSTER", "NODES").splitlines():
                    if "fail" in line.split()[2]:
                        self.failing.add(line.split()[0][:8])
            time.sleep(0.01)

    def stop(self):
        self.done = True
        self.thread.join()
        return self.slowest, sorted(self.failing)


def crc_slot(key):
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc & 16383


if __name__ == "__main__":
    main()
