"""Commands from a script can not crash, stop or freeze the server, and writes through
`execute()` respect the server's state as a Lua script's do: a read-only replica, maxmemory,
a client pause."""
import threading
import time

import pytest
import redis

from conftest import RedisServer
from helpers import gears, gears_error, wrapped

LANGUAGES = ["python", "lua", "rhai"]

TOP_LEVEL = {
    "python": "execute({args})",
    "lua": "execute({args})",
    "rhai": "execute({args});",
}
IN_CALLBACK = {
    "python": "GB('ShardsIDReader').map(lambda x: execute({args})).run()",
    "lua": "GB('ShardsIDReader'):map(function(x) return execute({args}) end):run()",
    "rhai": 'GB("ShardsIDReader").map(|x| execute({args})).run()',
}


def quoted(args):
    return ", ".join('"%s"' % a for a in args)


@pytest.fixture(scope="module")
def persistent():
    """A server with an append-only file: every write is propagated, so a write at the wrong
    moment (during a pause) would trip the server's own assertions."""
    s = RedisServer(extra_args=("--appendonly", "yes"))
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died:\n" + log


# Commands that can not run outside a real client or are not allowed in scripts. Each one
# crashed, stopped or froze the server before.
REFUSED = [
    ("WAIT", "1", "0"),
    ("SYNC",),
    ("PSYNC", "?", "-1"),
    ("DEBUG", "SEGFAULT"),
    ("SHUTDOWN", "NOSAVE", "NOW"),
    ("MONITOR",),
    ("MULTI",),
    ("SUBSCRIBE", "ch"),
    ("CLIENT", "PAUSE", "5000", "WRITE"),
    ("REPLICAOF", "127.0.0.1", "1"),
]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("command", REFUSED, ids=lambda c: " ".join(c))
def test_commands_a_script_may_not_run_are_refused(persistent, language, command):
    client = persistent.new_client()
    name = command[0].lower()
    if name == "client":
        name = "client|pause"
    expected = "ERR command '%s' is not allowed on script mode" % name
    assert gears_error(client, language, TOP_LEVEL[language].format(args=quoted(command))) == \
        wrapped(language, expected)
    results, errors = gears(client, language, IN_CALLBACK[language].format(args=quoted(command)))
    assert results == [] and len(errors) == 1 and expected in errors[0]
    assert client.ping()


def test_writes_wait_while_clients_are_paused(persistent):
    """An execution that writes while writes are paused waits for the pause to end (as a Lua
    script is postponed); its reads go on meanwhile."""
    client = persistent.new_client()
    client.flushall()
    client.set("r", "before")
    script = ("import time\n"
              "def gen():\n"
              "    time.sleep(0.3)\n"
              "    seen = execute('GET', 'r')\n"
              "    execute('SET', 'w', 'written')\n"
              "    yield seen\n"
              "GB('PythonReader').run(gen)")
    results = {}

    def run():
        results["reply"] = gears(persistent.new_client(), "python", script)
        results["done"] = time.time()

    runner = threading.Thread(target=run)
    runner.start()
    time.sleep(0.1)
    paused_at = time.time()
    client.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
    time.sleep(0.5)
    assert client.get("w") is None, "a write went through during the pause"
    runner.join(timeout=10)
    assert results["reply"] == [["before"], []]
    assert results["done"] - paused_at >= 0.9
    assert client.get("w") == "written"


@pytest.mark.parametrize("language, script", [
    ("lua", "atomic(function() execute('SET', 'a', '1') end)"),
    ("rhai", 'atomic(|| execute("SET", "a", "1"));'),
])
def test_an_atomic_block_waits_for_a_pause_to_end(persistent, language, script):
    client = persistent.new_client()
    client.flushall()
    client.execute_command("CLIENT", "PAUSE", "500", "WRITE")
    started = time.time()
    # RG.*EXECUTE may replicate, so Redis itself postpones the command during the pause.
    assert gears(persistent.new_client(), language, script) == "OK"
    assert time.time() - started >= 0.4
    assert client.get("a") == "1"


@pytest.fixture(scope="module")
def replica():
    master = RedisServer(extra_args=("--repl-diskless-sync-delay", "0"))
    copy = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    deadline = time.time() + 10
    while copy.client.info("replication").get("master_link_status") != "up":
        assert time.time() < deadline, "the replica did not connect"
        time.sleep(0.05)
    yield master, copy
    for s in (copy, master):
        alive = s.alive()
        log = s.read_log()
        s.stop()
        assert alive, "redis-server died:\n" + log


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_read_only_replica_refuses_writes(replica, language):
    master, copy = replica
    master.client.set("k", "from master")
    deadline = time.time() + 5
    while copy.client.get("k") != "from master":
        assert time.time() < deadline
        time.sleep(0.02)
    client = copy.new_client()
    assert gears_error(client, language, TOP_LEVEL[language].format(args=quoted(["SET", "k", "x"]))) == \
        wrapped(language, "READONLY You can't write against a read only replica.")
    # Reads work on the replica, and it does not diverge from its master.
    script = {"python": "GB().map(lambda x: x['value']).run('k')",
              "lua": "GB():map(function(x) return x.value end):run('k')",
              "rhai": 'GB().map(|x| x.value).run("k")'}[language]
    assert gears(client, language, script) == [["from master"], []]
    assert copy.client.get("k") == master.client.get("k") == "from master"


@pytest.fixture(scope="module")
def small():
    # Module arguments first: the server's own options end the module's argument list.
    s = RedisServer(extra_args=("ExecutionMemoryLimit", "200mb", "MemoryLimit", "400mb",
                                "--maxmemory", "20mb", "--maxmemory-policy", "noeviction"))
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died:\n" + log


OOM_WRITES = {
    "python": ("v = 'x' * (2 << 20)\nfor i in range(20):\n    execute('SET', 'big:%d' % i, v)", 3),
    "lua": ("local v = string.rep('x', 2 * 1024 * 1024)\nfor i = 1, 20 do execute('SET', 'big:' .. i, v) end", 2),
    "rhai": ('let v = "";\nv.pad(2 * 1024 * 1024, "x");\nfor i in 0..20 { execute("SET", "big:" + i, v); }', 3),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_writes_respect_maxmemory(small, language):
    client = small.new_client()
    client.flushall()
    script, line = OOM_WRITES[language]
    error = gears_error(client, language, script)
    expected = "OOM command not allowed when used memory > 'maxmemory'."
    if language == "python":
        assert error == wrapped(language, expected, line=line)
    elif language == "lua":
        assert error == wrapped(language, expected, line=line)
    else:
        assert error.startswith(expected + " (line 3, position ")
    assert client.info("memory")["used_memory"] < 26 * 1024 * 1024
    # Reads and deletes still work.
    assert client.dbsize() > 0
    assert gears(client, language, TOP_LEVEL[language].format(args=quoted(["FLUSHALL"]))) == "OK"
    assert client.dbsize() == 0


def test_publish_waits_while_clients_are_paused(persistent):
    """PUBLISH is not a write but may replicate: like a direct PUBLISH, it waits for a pause."""
    client = persistent.new_client()
    pubsub = persistent.new_client().pubsub()
    pubsub.subscribe("news")
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    script = ("import time\n"
              "def gen():\n"
              "    time.sleep(0.3)\n"
              "    yield execute('PUBLISH', 'news', 'hello')\n"
              "GB('PythonReader').run(gen)")
    results = {}
    runner = threading.Thread(target=lambda: results.update(reply=gears(persistent.new_client(), "python", script)))
    runner.start()
    time.sleep(0.1)
    paused_at = time.time()
    client.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
    message = pubsub.get_message(timeout=5)
    while message is not None and message["type"] != "message":
        message = pubsub.get_message(timeout=5)
    runner.join(timeout=10)
    assert message["data"] == "hello"
    assert time.time() - paused_at >= 0.9
    assert results["reply"] == [["1"], []]
    pubsub.close()
