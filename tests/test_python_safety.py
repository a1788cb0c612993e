"""Python safety against a real redis-server: isolation of the Gears API between scripts, binary
field names, memory returned after each script, and (where this build understands the module
arguments) memory limits, atomic-block time limits and switching Python off."""
import time

import pytest

from conftest import RedisServer
from helpers import gears, gears_error


def python(client, script):
    return gears(client, "python", script)


# --- Isolation -------------------------------------------------------------------------------

SPY = r"""
import sys, types, builtins, redisgears
sys._gears_spy = []
real_execute = execute
def spy(*args):
    sys._gears_spy.append(args)
    return real_execute(*args)
try:
    redisgears.executeCommand = spy
except AttributeError:
    pass
vars(redisgears)['executeCommand'] = spy
try:
    type(redisgears).executeCommand = spy
except TypeError:
    pass
fake = types.ModuleType('redisgears')
fake.executeCommand = spy
sys.modules['redisgears'] = fake
builtins.execute = spy
GearsBuilder.run.__globals__['execute'] = spy
globals()['execute'] = spy
"""

VICTIM = r"""
import redisgears
from redisgears import executeCommand
execute('SET', 'user:1', 'password123')
redisgears.executeCommand('SET', 'user:2', 'password456')
executeCommand('SET', 'user:3', 'password789')
GB('ShardsIDReader').foreach(lambda x: execute('SET', 'user:4', 'password000')).run()
"""

CAPTURED = "import sys\nGB('ShardsIDReader').map(lambda x: len(sys._gears_spy)).run()"

RESTORE = r"""
import sys, builtins, redisgears
sys.modules['redisgears'] = redisgears
del builtins.execute
del sys._gears_spy
"""


def test_a_script_can_not_spy_on_the_commands_of_later_scripts(r):
    assert python(r, SPY) == "OK"
    try:
        assert python(r, VICTIM) == [["1"], []]
        assert python(r, CAPTURED) == [["0"], []]
        assert [r.get("user:%d" % i) for i in range(1, 5)] == \
            ["password123", "password456", "password789", "password000"]
    finally:
        assert python(r, RESTORE) == "OK"


def test_the_redisgears_module_and_gears_error_are_read_only(r):
    error = gears_error(r, "python", "import redisgears\nredisgears.executeCommand = print")
    assert error.endswith("'AttributeError: the Gears API module can not be modified\\n']")
    error = gears_error(r, "python", "import redisgears\ndel redisgears.log")
    assert error.endswith("'AttributeError: the Gears API module can not be modified\\n']")
    error = gears_error(r, "python", "GearsError.__str__ = lambda self: 'spied'")
    assert error.endswith(
        "\"TypeError: cannot set '__str__' attribute of immutable type 'error'\\n\"]")


def test_builtins_patched_by_one_script_are_not_seen_by_another(r):
    assert python(r, "import builtins\nbuiltins._gears_len = builtins.len\n"
                     "builtins.len = lambda x: 42") == "OK"
    try:
        assert python(r, "GB('ShardsIDReader').map(lambda x: len('abc')).run()") == [["3"], []]
    finally:
        python(r, "import builtins\nbuiltins.len = builtins._gears_len\ndel builtins._gears_len")


def test_each_script_has_its_own_gears_builder(r):
    assert python(r, "GearsBuilder.run = lambda self, *a, **k: None\nGB.map = None") == "OK"
    assert python(r, "GB('ShardsIDReader').map(lambda x: 'mine').run()") == [["mine"], []]


# --- Binary data -----------------------------------------------------------------------------

def test_binary_hash_field_names_are_bytes_dict_keys_both_ways(r, server):
    b = server.new_client(decode_responses=False)
    b.hset(b"h", mapping={b"f\xff": b"binary", b"g": b"text"})
    script = ("def copy(x):\n"
              "    fields = []\n"
              "    for name, value in x['value'].items():\n"
              "        fields += [name, value]\n"
              "    execute('HSET', 'copy', *fields)\n"
              "    return [x['value'][b'f\\xff'], x['value']['g'], repr(sorted(x['value'], key=repr))]\n"
              "GB().map(copy).run('h')")
    assert python(r, script) == [["['binary', 'text', \"['g', b'f\\\\xff']\"]"], []]
    assert b.hgetall(b"copy") == {b"f\xff": b"binary", b"g": b"text"}
    script = "GB().map(lambda x: sorted(x['value'].keys(), key=repr)).run('h', convertToStr=False)"
    assert b.execute_command("RG.PYEXECUTE", script) == [[[b"g", b"f\xff"]], []]


def test_execute_deletes_exactly_the_binary_key_it_is_given(r, server):
    b = server.new_client(decode_responses=False)
    for key in (b"k\xff", b"k\xfe", b"k?"):
        b.set(key, b"1")
    script = ("GB().filter(lambda x: x['key'] == b'k\\xff')"
              ".foreach(lambda x: execute('del', x['key'])).map(lambda x: repr(x['key'])).run('k*')")
    assert python(r, script) == [["b'k\\xff'"], []]
    assert sorted(b.keys(b"k*")) == [b"k?", b"k\xfe"]


# --- Memory returned after each script -------------------------------------------------------

BIG_GLOBALS = "a = list(range(100000))\ndef f():\n    return a"


def rss(server):
    with open("/proc/%d/status" % server.process.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_repeated_scripts_with_big_globals_do_not_grow_the_server(r, server):
    for _ in range(20):
        python(r, BIG_GLOBALS)
    before = rss(server)
    for _ in range(300):
        assert python(r, BIG_GLOBALS) == "OK"
    growth = rss(server) - before
    # Each script's globals hold about 3.6 MB; they used to stay until the cyclic GC ran
    # (1,000 runs grew the server by 360 MB).
    assert growth < 30 * 1024 * 1024, "the server grew by %d bytes" % growth


def test_repeated_scripts_with_big_globals_do_not_grow_python_memory(r):
    for _ in range(20):
        python(r, BIG_GLOBALS)
    before = r.info("rg")["rg_used_memory_python"]
    for _ in range(300):
        python(r, BIG_GLOBALS)
    growth = r.info("rg")["rg_used_memory_python"] - before
    assert growth < 16 * 1024 * 1024, "Python memory grew by %d bytes" % growth


# --- Limits ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited():
    s = RedisServer(extra_args=("ExecutionMemoryLimit", "20000000", "AtomicBlockMaxTime", "100"))
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died:\n" + log


OOM = "OOM the execution used more than its memory limit of 20000000 bytes (ExecutionMemoryLimit)"


@pytest.mark.parametrize("script", [
    "GB('ShardsIDReader').map(lambda x: len(bytearray(100000000))).run()",
    "GB('ShardsIDReader').map(lambda x: len([0] * 250000000)).run()",
    "GB('ShardsIDReader').map(lambda x: len(bytearray(1 << 44))).run()",
    "def f(x):\n    l = []\n    while True:\n        l.append(str(len(l)))\nGB('ShardsIDReader').map(f).run()",
])
def test_an_execution_past_its_memory_limit_is_stopped(limited, script):
    client = limited.new_client()
    assert python(client, script) == [[], [OOM]]
    assert python(client, "GB('ShardsIDReader').map(lambda x: len(bytearray(1000000))).run()") \
        == [["1000000"], []]
    assert client.ping()


def test_top_level_code_past_the_memory_limit_is_stopped(limited):
    assert gears_error(limited.new_client(), "python", "a = bytearray(100000000)") == OOM


BUSY = ("BUSY the atomic block ran longer than 100 ms (AtomicBlockMaxTime); it was interrupted "
        "and the Redis lock released")


@pytest.mark.parametrize("loop", [
    "while True:\n            pass",
    "while True:\n            try:\n                pass\n            except Exception:\n                pass",
])
def test_an_endless_atomic_block_is_interrupted_and_releases_redis(limited, loop):
    client = limited.new_client()
    script = ("def f(x):\n    with atomic():\n        %s\n"
              "GB('ShardsIDReader').map(f).run()" % loop)
    started = time.monotonic()
    assert python(client, script) == [[], [BUSY]]
    assert time.monotonic() - started < 2
    assert client.ping()


def test_an_endless_atomic_block_at_top_level_is_interrupted(limited):
    client = limited.new_client()
    assert gears_error(client, "python", "with atomic():\n    while True:\n        pass") == BUSY


def test_sleep_inside_an_atomic_block_is_refused(limited):
    client = limited.new_client()
    script = ("import time\ndef f(x):\n    with atomic():\n        time.sleep(0.01)\n"
              "GB('ShardsIDReader').map(f).run()")
    results, errors = python(client, script)
    assert results == [] and len(errors) == 1
    assert errors[0].endswith("'gears.error: sleep is not allowed inside an atomic block (it "
                              "would hold the Redis lock)\\n']")
    assert python(client, "import time\nGB('ShardsIDReader').map(lambda x: time.sleep(0.01)).run()") \
        == [["None"], []]
