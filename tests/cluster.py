"""A loopback Redis Cluster made by the tests: masters (and optional replicas) on 127.0.0.1,
each with the Gears module, joined with `redis-cli --cluster create`, stopped by pid."""
import itertools
import os
import shutil
import socket
import subprocess
import time

import redis

from conftest import RedisServer

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


# Cluster nodes also listen on port + 10000 (the cluster bus). Both must be free, and the bus
# port below Linux's ephemeral range (32768 and up), where a client connection may hold it.
_cluster_ports = itertools.count(12000 + (os.getpid() % 400) * 20)


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_port():
    for port in _cluster_ports:
        if port + 10000 >= 32768:
            raise RuntimeError("no free port pair for a cluster node")
        if _free(port) and _free(port + 10000):
            return port


class Cluster:
    def __init__(self, masters=3, replicas=0, module_args=(), node_args=lambda i: (),
                 node_module=lambda i: None):
        """`node_args(i)`: more module arguments for node i; `node_module(i)`: the module
        library node i loads (None: libgears.so)."""
        self.nodes = []
        try:
            for i in range(masters * (1 + replicas)):
                self.nodes.append(RedisServer(
                    port=cluster_port(), module=node_module(i),
                    extra_args=(*module_args, *node_args(i)),
                    server_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                 "--cluster-node-timeout", "5000")))
            addresses = ["127.0.0.1:%d" % n.port for n in self.nodes]
            subprocess.run([REDIS_CLI, "--cluster", "create", *addresses,
                            "--cluster-replicas", str(replicas), "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            deadline = time.time() + 30
            while not all(self._ok(n) for n in self.nodes):
                if time.time() > deadline:
                    raise RuntimeError("the cluster did not become ok")
                time.sleep(0.1)
            # Gears reads the topology every second.
            time.sleep(1.2)
            # The first distributed run right after the cluster formed can find a shard whose
            # bus does not deliver yet (seen on Valkey, about one start in three: "no answer
            # from shard ..."): the tests start once every master runs one across all shards.
            deadline = time.time() + 20
            for node in self.masters:
                while True:
                    try:
                        reply = node.client.execute_command(
                            "RG.LUAEXECUTE", "GB('ShardsIDReader'):count():run()")
                    except redis.RedisError:
                        reply = None
                    if reply == [[str(masters)], []]:
                        break
                    if time.time() > deadline:
                        raise RuntimeError("the cluster does not run executions: %r" % (reply,))
                    time.sleep(0.2)
        except Exception:
            self.stop()
            raise

    def _ok(self, node):
        """The node sees the cluster ok and knows every other node (the bus drops messages
        from a node it does not know yet)."""
        try:
            info = node.client.execute_command("CLUSTER", "INFO")
            if "cluster_state:ok" not in info:
                return False
            lines = [l for l in node.client.execute_command("CLUSTER", "NODES").splitlines() if l]
            return (len(lines) == len(self.nodes)
                    and all("connected" in l and "handshake" not in l and "fail" not in l
                            for l in lines))
        except redis.RedisError:
            return False

    @property
    def masters(self):
        return [n for n in self.nodes if n.client.execute_command("ROLE")[0] == "master"]

    def client(self):
        """A cluster client (follows redirections)."""
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True)

    def stop(self):
        for node in self.nodes:
            node.stop()
