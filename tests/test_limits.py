"""Bounded resources: an atomic block can not hold the server past its time limit, scripts can
not grow past Gears' memory limits, and the server keeps answering."""
import threading
import time

import pytest

from conftest import RedisServer
from helpers import gears, gears_error

BUSY = ("BUSY the atomic block ran longer than 300 ms (AtomicBlockMaxTime); it was interrupted "
        "and the Redis lock released")
EXECUTION_OOM = ("OOM the execution used more than its memory limit of 33554432 bytes "
                 "(ExecutionMemoryLimit)")


@pytest.fixture(scope="module")
def server():
    s = RedisServer(extra_args=("AtomicBlockMaxTime", "300", "ExecutionMemoryLimit", "32mb"))
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died during the tests:\n" + log


RUNAWAY_ATOMIC = {
    "lua": [
        "atomic(function() while true do end end)",
        # Catching the error does not keep the lock: the next line raises again.
        "atomic(function() while true do pcall(function() while true do end end) end end)",
        # The matching runs in string.find, not in Lua code, and still stops.
        "atomic(function() pcall(string.find, ('a'):rep(40), ('a*'):rep(40) .. 'b') end)",
        # Library loops that Lua runs in C, where its instruction hook never fires.
        "atomic(function() table.move({}, 1, 1e14, 1, {}) end)",
        "atomic(function() table.insert(setmetatable({}, {__len = function() return 1e15 end}), 1, 'x') end)",
        "atomic(function() table.remove(setmetatable({}, {__len = function() return 1e15 end}), 1) end)",
        "atomic(function() for i = 1, 1e15 do local s = string.rep('', 1e15) end end)",
    ],
    "rhai": [
        "atomic(|| { loop {} });",
        # A stop can not be caught.
        "atomic(|| { loop { try { loop {} } catch {} } });",
    ],
}


def ping_latencies(server, stop):
    client = server.new_client()
    worst = 0.0
    while not stop.is_set():
        started = time.time()
        client.ping()
        worst = max(worst, time.time() - started)
        time.sleep(0.01)
    return worst


@pytest.mark.parametrize("language, script", [
    (language, script) for language, scripts in RUNAWAY_ATOMIC.items() for script in scripts])
def test_a_runaway_atomic_block_is_interrupted(server, r, language, script):
    stop = threading.Event()
    worst = []
    watcher = threading.Thread(target=lambda: worst.append(ping_latencies(server, stop)))
    watcher.start()
    started = time.time()
    assert gears_error(r, language, script) == BUSY
    elapsed = time.time() - started
    stop.set()
    watcher.join()
    assert 0.3 <= elapsed < 2.0
    # Other clients waited at most for the block's time limit.
    assert worst[0] < 1.0
    assert r.ping()


@pytest.mark.parametrize("language, script", [
    ("lua", "GB('PythonReader'):map(function(x) atomic(function() while true do end end) return x end)"
            ":run(function() coroutine.yield(1) coroutine.yield(2) end)"),
    ("rhai", 'GB("PythonReader").map(|x| { atomic(|| { loop {} }); x }).run(|| [1, 2])'),
])
def test_an_interrupted_atomic_block_stops_its_execution(r, language, script):
    # The execution ends with the stop as its last error; the second record is not processed.
    assert gears(r, language, script) == [[], [BUSY]]


def test_sleep_inside_an_atomic_block_is_refused(r):
    assert gears_error(r, "rhai", "atomic(|| sleep(5));") == \
        "sleep is not allowed inside an atomic block (it would hold the Redis lock) (line 1, position 11)"
    started = time.time()
    assert gears(r, "rhai", "sleep(0.2);") == "OK"
    assert time.time() - started >= 0.2


MEMORY_HOGS = {
    "lua": "local t = {} for i = 1, 120000000 do t[i] = i end",
    "rhai": 'let a = []; for i in 0..3000000 { a.push("some text " + i) }',
}


@pytest.mark.parametrize("language", MEMORY_HOGS)
def test_an_execution_can_not_pass_its_memory_limit(server, r, language):
    before = r.info("rg")["rg_used_memory"]
    assert gears_error(r, language, MEMORY_HOGS[language]) == EXECUTION_OOM
    # The memory is given back.
    assert r.info("rg")["rg_used_memory"] < before + 4 * 1024 * 1024


@pytest.mark.parametrize("script, error", [
    ("let a = []; a.pad(1 << 50, 0);", "Size of array too large (line 1, position 15)"),
    ("let a = []; a.pad(120000000, 0);", "Size of array too large (line 1, position 15)"),
    ("let a = []; a.pad(1000, 0); let b = []; b.pad(100000, a);", "Size of array too large (line 1, position 43)"),
    ("let b = blob(); b.pad(1 << 40, 0);", "Size of BLOB too large (line 1, position 19)"),
    ("let b = blob(1 << 40);", "Size of BLOB too large (line 1, position 9)"),
    # An item nested too deep to measure is taken as too large to copy many times.
    ("let big = []; big.pad(1000, 0); for i in 0..70 { big = [big]; } let a = []; a.pad(200, big);",
     "Size of array too large (line 1, position 79)"),
    ('let s = ""; s.pad(1 << 40, "x");', "Length of string too large (line 1, position 15)"),
    ("let s = \"\"; s.pad(1 << 40, 'x');", "Length of string too large (line 1, position 15)"),
])
def test_rhai_allocations_past_the_limit_are_errors(r, script, error):
    assert gears_error(r, "rhai", script) == error


def test_rhai_replace_keeps_its_results(r):
    script = ('let a = "hello, world! hello"; a.replace("hello", "*"); '
              'let b = "hello"; b.replace(\'l\', "(^)"); let c = "hello"; c.replace("l", \'*\'); '
              'let d = "hello"; d.replace(\'l\', \'*\'); let e = "abc"; e.replace("", "."); '
              'let f = ""; f.replace("a", "b"); let g = "aaa"; g.replace("aa", "b"); '
              'GB("ShardsIDReader").map(|x| [a, b, c, d, e, f, g]).run()')
    assert gears(r, "rhai", script) == \
        [["['*, world! *', 'he(^)(^)o', 'he**o', 'he**o', '.a.b.c.', '', 'ba']"], []]


def test_rhai_allocations_within_the_limit_work(r):
    assert gears(r, "rhai", 'let a = []; a.pad(100000, 7); let s = ""; s.pad(5, "ab"); '
                            'GB("ShardsIDReader").map(|x| [a.len(), a[99999], s]).run()') == \
        [["[100000, 7, 'ababa']"], []]


def test_lua_allocations_past_the_limit_are_errors(r):
    assert gears_error(r, "lua", "local s = string.rep('x', 64 * 1024 * 1024)") == EXECUTION_OOM
    assert gears_error(r, "lua", "local s = string.rep('x', 1 << 40)") == \
        "script:1: resulting string too large"


def test_gears_memory_limit_bounds_all_executions():
    s = RedisServer(extra_args=("MemoryLimit", "48mb", "ExecutionMemoryLimit", "1gb"))
    try:
        client = s.new_client()
        assert gears_error(client, "lua", MEMORY_HOGS["lua"]) == \
            "OOM Gears used more than its memory limit of 50331648 bytes (MemoryLimit)"
        # Rhai's large allocations are checked against what is left of Gears' limit too.
        assert gears_error(client, "rhai", "let s = \"\"; s.pad(200000000, 'a');") == \
            "Length of string too large (line 1, position 15)"
        assert gears_error(client, "rhai", "let b = blob(200000000);") == \
            "Size of BLOB too large (line 1, position 9)"
        assert client.ping()
        info = client.info("rg")
        assert info["rg_memory_limit"] == 48 << 20
        assert info["rg_execution_memory_limit"] == 1 << 30
    finally:
        s.stop()


@pytest.mark.parametrize("script", [
    "table.move({}, 1, 1e14, 1, {})",
    "table.insert(setmetatable({}, {__len = function() return 1e15 end}), 1, 'x')",
    "table.remove(setmetatable({}, {__len = function() return 1e15 end}), 1)",
    # C functions as metamethods run no Lua instruction either.
    "table.sort(setmetatable({}, {__len = function() return 30000000 end, __index = rawlen, "
    "__newindex = rawlen}))",
    "local s = table.concat(setmetatable({}, {__index = rawlen}), '', 1, 2e8)",
])
def test_a_lua_library_loop_stops_when_aborted(r, script):
    execution = r.execute_command(
        "RG.LUAEXECUTE", "GB('ShardsIDReader'):foreach(function(x) %s end):run()" % script,
        "UNBLOCKING")
    # Soon: the sort copies its 30,000,000 items into a Lua table, which passes the 32 MB
    # ExecutionMemoryLimit (an OOM stop, not the abort) after about 2,000,000 of them.
    time.sleep(0.02)
    started = time.time()
    assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == [[], ["Execution was aborted"]]
    assert time.time() - started < 1


def test_the_lua_library_replacements_keep_their_results(r):
    script = ("local t = {} for i = 1, 10000 do t[i] = i end "
              "table.move(t, 1, 10000, 3) local a = t[3] .. ',' .. t[10002] "
              "local u = {} for i = 1, 10000 do u[i] = i end table.move(u, 3, 10000, 1) "
              "local b = u[1] .. ',' .. u[9998] .. ',' .. u[9999] "
              "local m = setmetatable({1, 2, 3}, {}) table.insert(m, 1, 0) table.insert(m, 9) "
              "local c = table.concat(m, ',') .. '/' .. table.remove(m, 1) .. table.remove(m) "
              "return {a, b, c, string.rep('', 1e15), string.rep('ab', 3, ','), string.rep('', 3, ',')}")
    assert gears(r, "lua", "GB('ShardsIDReader'):map(function(x) %s end):run()" % script) == \
        [["['1,10000', '3,10000,9999', '0,1,2,3,9/09', '', 'ab,ab,ab', ',,']"], []]
    errors = [
        ("local x = table.move({}, 1, 2) return x",
         "script:1: bad argument #4 to 'move' (number expected, got no value)"),
        ("local x = table.insert(setmetatable({}, {}), 'a', 1) return x",
         "script:1: bad argument #2 to 'insert' (number expected, got string)"),
        ("local x = table.remove(setmetatable({}, {}), 5) return x",
         "script:1: bad argument #2 to 'remove' (position out of bounds)"),
        ("local x = string.rep('x', 1.5) return x",
         "script:1: bad argument #2 to 'rep' (number has no integer representation)"),
        ("local x = table.concat(setmetatable({1, {}, 3}, {})) return x",
         "script:1: invalid value (table) at index 2 in table for 'concat'"),
        ("local x = table.sort(setmetatable({1, 2}, {}), 5) return x",
         "script:1: bad argument #2 to 'sort' (function expected, got number)"),
    ]
    sorted_script = ("local t = setmetatable({3, 1, 2}, {}) table.sort(t) "
                     "local u = setmetatable({3, 1, 2}, {}) table.sort(u, function(a, b) return a > b end) "
                     "return table.concat(t, ',') .. '/' .. table.concat(u, '-', 2, 3)")
    assert gears(r, "lua", "GB('ShardsIDReader'):map(function(x) %s end):run()" % sorted_script) == \
        [["1,2,3/2-1"], []]
    for body, error in errors:
        assert gears(r, "lua", "GB('ShardsIDReader'):map(function(x) %s end):run()" % body) == \
            [[], [error]]


@pytest.mark.parametrize("script", [
    "let s = \"\"; s.pad(600000000, 'a');",
    'let s = ""; s.pad(200000000, "ab");',
    "let b = blob(600000000);",
    "let a = []; a.pad(40000000, 1);",
])
def test_a_long_rhai_fill_stops_when_aborted(script):
    # A fill of hundreds of millions of items is stopped between chunks, not run to its end.
    s = RedisServer(extra_args=("MemoryLimit", "2gb", "ExecutionMemoryLimit", "1gb"))
    try:
        client = s.new_client()
        execution = client.execute_command("RG.RHAIEXECUTE", script, "UNBLOCKING")
        time.sleep(0.05)
        started = time.time()
        assert client.execute_command("RG.ABORTEXECUTION", execution) == "OK"
        assert client.execute_command("RG.GETRESULTSBLOCKING", execution) == \
            [[], ["Execution was aborted"]]
        assert time.time() - started < 1
    finally:
        s.stop()


def test_limits_follow_maxmemory_and_the_settings(r, server):
    default = server.new_client()
    info = default.info("rg")
    assert info["rg_execution_memory_limit"] == 32 << 20
    r.config_set("maxmemory", "100mb")
    try:
        assert r.info("rg")["rg_memory_limit"] == 100 << 20
        assert r.execute_command("RG.CONFIGSET", "MemoryLimit", "64mb") == ["OK"]
        assert r.info("rg")["rg_memory_limit"] == 64 << 20
        assert r.execute_command("RG.CONFIGGET", "MemoryLimit") == [64 << 20]
        assert r.execute_command("RG.CONFIGSET", "MemoryLimit", "0") == ["OK"]
        assert r.info("rg")["rg_memory_limit"] == 100 << 20
    finally:
        r.config_set("maxmemory", "0")
    # Without maxmemory, half of the machine's memory.
    assert r.info("rg")["rg_memory_limit"] > 100 << 20


def test_info_reports_gears_memory(r):
    info = r.info("rg")
    assert {"rg_used_memory", "rg_used_memory_python", "rg_used_memory_native",
            "rg_memory_limit", "rg_execution_memory_limit", "rg_python"} <= set(info)
    assert info["rg_used_memory"] == info["rg_used_memory_python"] + info["rg_used_memory_native"]
    assert info["rg_python"] == "enabled"
    assert "rg_used_memory" in r.info("everything")


@pytest.mark.parametrize("language, script", [
    ("lua", "GB('KeysOnlyReader'):run({patternGenerator=function() "
            "atomic(function() while true do end end) return {'*', false} end})"),
    ("rhai", 'GB("KeysOnlyReader").run(#{ patternGenerator: || { atomic(|| { loop {} }); ["*", false] } });'),
    ("python", "def gen():\n    with atomic():\n        while True:\n            pass\n"
               "GB('KeysOnlyReader').run(patternGenerator=gen)"),
])
def test_a_pattern_generator_is_stopped_like_any_callback(r, language, script):
    r.set("k", "1")
    started = time.time()
    assert gears(r, language, script) == [[], [BUSY]]
    assert time.time() - started < 2
    assert r.ping()


def test_lua_finalizers_are_refused(r):
    # Lua runs finalizers with hooks off: no limit could reach a loop in one.
    assert gears_error(r, "lua", "setmetatable({}, {__gc = function() "
                                 "atomic(function() while true do end end) end})") == \
        "script:1: __gc metamethods are not allowed"
    assert gears(r, "lua", "setmetatable({}, {__index = function() return 1 end})") == "OK"


@pytest.mark.parametrize("script, error", [
    # One operation can at most double a value: the doubling stops at the limit.
    ('let s = "abcdefgh"; loop { s += s; }', EXECUTION_OOM),
    # Operations that make many values out of one are checked before they allocate.
    ('let s = ""; s.pad(7000000, "x,"); let a = s.split(",");',
     "Size of array too large (line 1, position 45)"),
    ('let s = ""; s.pad(7000000, "x"); let a = s.to_chars();',
     "Size of array too large (line 1, position 44)"),
    ("let b = blob(7000000); let a = b.to_array();",
     "Size of array too large (line 1, position 34)"),
    # A replacement longer than what it replaces grows the string by the count of matches.
    ('let s = ""; s.pad(1000000, "a"); let p = ""; p.pad(100000, "b"); s.replace("a", p);',
     "Length of string too large (line 1, position 68)"),
    ("let s = \"\"; s.pad(1000000, 'a'); s.replace('a', \"0123456789012345678901234567890123456789\");",
     "Length of string too large (line 1, position 36)"),
])
def test_rhai_expanding_operations_stop_at_the_limit(r, script, error):
    assert gears_error(r, "rhai", script) == error
    assert r.ping()


def test_records_the_readers_hold_count_toward_the_limit(r):
    big = "x" * 100000
    with r.pipeline(transaction=False) as p:
        for i in range(700):
            p.set("v:%d" % i, big)
        p.execute()
    for language, script in [("lua", "GB():map(function(x) return x.value end):run('v:*')"),
                             ("python", "GB().map(lambda x: x['value']).run('v:*')")]:
        results, errors = gears(r, language, script)
        assert errors[-1:] == [EXECUTION_OOM]
    assert r.ping()


FILL_BIG_HASH = ("for i = 0, 299 do local a = {} for j = 1, 1000 do "
                 "a[#a + 1] = 'f' .. (i * 1000 + j) a[#a + 1] = 'v' .. j end "
                 "redis.call('HSET', KEYS[1], unpack(a)) end")


@pytest.mark.parametrize("language, script", [
    ("python", "GB().map(lambda x: len(x['value'])).run('big')"),
    ("lua", "GB():map(function(x) return #x.value end):run('big')"),
    ("rhai", 'GB().map(|x| x.value.len()).run("big");'),
])
def test_a_record_too_big_to_convert_is_the_memory_error(r, server, language, script):
    # Converting a 300,000-field hash for the callback passes the 32 MB limit: the execution
    # ends with the memory error, once, never an internal error.
    r.eval(FILL_BIG_HASH, 1, "big")
    assert gears(r, language, script) == [[], [EXECUTION_OOM]]
    assert "a panic" not in server.read_log()


def test_gears_memory_limit_bounds_single_allocations():
    s = RedisServer(extra_args=("MemoryLimit", "96mb", "ExecutionMemoryLimit", "1gb"))
    try:
        r = s.new_client()
        gears_oom = "OOM Gears used more than its memory limit of 100663296 bytes (MemoryLimit)"
        # One instruction or one operation allocating past Gears' whole limit.
        assert gears_error(r, "lua", "local s = string.rep('x', 300000000) return #s") == gears_oom
        assert gears_error(r, "python", "x = 'x' * 300000000") == gears_oom
        assert gears_error(r, "rhai", 'let s = "x"; for i in 0..29 { s += s; } s.len()') == \
            gears_oom
        assert gears(r, "lua", "GB('ShardsIDReader'):map(function(x) "
                               "return #string.rep('x', 300000000) end):run()") == [[], [gears_oom]]
        assert s.new_client().info("rg")["rg_used_memory"] < 96 << 20
    finally:
        s.stop()
