"""Test harness: real redis-server processes with the Gears module loaded.

Each test module gets its own server on a fresh port (started here, killed by pid at the end);
each test starts from an empty database.
"""
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.environ.get("GEARS_MODULE", os.path.join(ROOT, "target", "release", "libgears.so"))
# Gears built with the example native extensions (examples/gears-extended), beside libgears.so.
EXTENDED_MODULE = os.environ.get(
    "GEARS_EXTENDED_MODULE", os.path.join(os.path.dirname(MODULE), "libgears_extended.so"))
VENV = os.environ.get("GEARS_VENV", os.path.join(ROOT, ".venv"))
# The server binary: Debian's redis-server by default; GEARS_SERVER picks another (the test
# command also runs the suite on Valkey's valkey-server).
REDIS_SERVER = os.environ.get("GEARS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"

_ports = itertools.count(21000 + (os.getpid() % 500) * 20)


def _free_port():
    for port in _ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


class RedisServer:
    """A redis-server child process with the module loaded."""

    def __init__(self, extra_args=(), server_args=(), dir=None, port=None, module=None):
        """`extra_args`: module arguments; `server_args`: the server's own options (they come
        last, so they override the defaults above); `dir`: a data directory to start from (a
        restart), else a new one; `module`: the module's library (libgears.so by default)."""
        self.port = port or _free_port()
        self.dir = dir or tempfile.mkdtemp(prefix="gears-test-")
        self.log = os.path.join(self.dir, "redis.log")
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.dir, "--logfile", self.log,
            "--enable-module-command", "yes", "--enable-debug-command", "local",
            "--loadmodule", module or MODULE, "PythonVenv", VENV, *extra_args, *server_args,
        ]
        # stderr goes to a file: a pipe nobody reads would block the server once full.
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
        # Wait for the port with plain sockets: redis-py retries refused connections with
        # back-off, which would make every start (and every failed start) slow.
        deadline = time.time() + 10
        while True:
            if self.process.poll() is not None or time.time() > deadline:
                log = self.read_log()
                self.stop()
                raise RuntimeError("redis-server did not start:\n" + log)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                                  retry=Retry(NoBackoff(), 0))
        while True:
            try:
                if self.client.ping():
                    break
            except (redis.BusyLoadingError, redis.ConnectionError):
                # The server listens before it loads its modules: a module that refuses to
                # load ends it after a connection was accepted.
                if self.process.poll() is not None or time.time() > deadline:
                    log = self.read_log()
                    self.stop()
                    raise RuntimeError("redis-server did not start:\n" + log)
                time.sleep(0.02)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    @property
    def kind(self):
        """'valkey' or 'redis', and the version: ('redis', (7, 0, 15))."""
        info = self.client.info("server")
        name = info.get("server_name", "redis")
        version = info.get("valkey_version" if name == "valkey" else "redis_version", "0.0.0")
        return name, tuple(int(x) for x in str(version).split("."))

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def read_stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def new_client(self, **kwargs):
        kwargs.setdefault("decode_responses", True)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def alive(self):
        return self.process.poll() is None

    def stop(self, keep_dir=False):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def shutdown(self):
        """Stops the server the way an operator does (SHUTDOWN: it saves or flushes its AOF),
        keeping its data directory for a restart."""
        try:
            self.client.shutdown(nosave=False)
        except redis.ConnectionError:
            pass
        self.process.wait(timeout=20)


def serve(*extra_args):
    """A server for a module's tests (module arguments `extra_args`), stopped at the end; it
    must still be alive then."""
    s = RedisServer(extra_args=extra_args)
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died during the tests:\n" + log


@pytest.fixture(scope="module")
def server():
    yield from serve()


@pytest.fixture
def rr(server):
    """A client that decodes replies, on an empty database; every registration is removed
    after the test."""
    client = server.new_client(decode_responses=True)
    client.flushall()
    yield client
    admin = server.new_client(decode_responses=True)
    for registration in admin.execute_command("RG.DUMPREGISTRATIONS"):
        admin.execute_command("RG.UNREGISTER", registration[1])
    assert admin.ping()


@pytest.fixture
def r(server):
    """A client on an empty database; after the test, the server must still answer PING."""
    client = server.new_client()
    client.flushall()
    yield client
    assert server.new_client().ping()
