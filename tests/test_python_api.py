"""Python's script API and run() options, against a real redis-server."""
import time

import redis

import pytest

from conftest import RedisServer
from helpers import gears, gears_error, py_error


@pytest.fixture(scope="module")
def server():
    s = RedisServer(extra_args=("MySetting", "hello", "ExecutionThreads", "2"))
    yield s
    alive = s.alive()
    s.stop()
    assert alive


def test_log_writes_to_the_redis_log(r, server):
    assert gears(r, "python", "log('from a script'); log('careful', level='warning')") == "OK"
    deadline = time.time() + 5
    while time.time() < deadline:
        log = server.read_log()
        if "GEARS: careful" in log:
            break
        time.sleep(0.05)
    assert "<rg> GEARS: from a script" in log
    assert "# <rg> GEARS: careful" in log


def test_log_errors(r):
    assert gears_error(r, "python", "log('x', level='loud')") == py_error(
        "<module>", "gears.error: Log level should be one of the following : debug,verbose,notice,warning")
    assert gears_error(r, "python", "log(1)") == py_error(
        "<module>", "gears.error: Log message must be a string")


def test_config_get_reads_settings_and_extra_module_arguments(r):
    # RedisGears 1.2's configGet saw only the extra config dictionary; Gears also reads its
    # settings, with the values RG.CONFIGGET replies.
    script = ("GB('ShardsIDReader').map(lambda x: [configGet('MySetting'), configGet('Nope'), "
              "gearsConfigGet('Nope', 'fallback'), configGet('ExecutionThreads')]).run()")
    assert gears(r, "python", script) == [["['hello', None, 'fallback', 2]"], []]


def test_hashtag_on_a_single_node(r):
    assert gears(r, "python", "GB('ShardsIDReader').map(lambda x: hashtag()).run()") == [["06S"], []]


def test_execute_conversions(r):
    r.rpush("l", "a", "b")
    script = ("GB('ShardsIDReader').map(lambda x: [execute('LRANGE', 'l', 0, -1), execute('LLEN', 'l'), "
              "execute('GET', 'missing'), execute('SET', 'k', 1.5), execute('GET', 'k'), execute()]).run()")
    assert gears(r, "python", script) == [["[['a', 'b'], 2, None, 'OK', '1.5', []]"], []]


def test_binary_values_arrive_as_bytes(r):
    r.set("bin", b"\xff\x00")
    assert gears(r, "python", "GB().map(lambda x: repr(x['value'])).run('bin')") == \
        [["b'\\xff\\x00'"], []]


def test_keys_only_reader_options(r):
    for i in range(5):
        r.set("k:%d" % i, i)
    results, errors = gears(r, "python", "GB('KeysOnlyReader').run('k:*', count=2)")
    assert (sorted(results), errors) == (["k:0", "k:1", "k:2", "k:3", "k:4"], [])
    assert gears(r, "python", "GB('KeysOnlyReader').run('k:1', noScan=True)") == [["k:1"], []]
    assert gears(r, "python", "GB('KeysOnlyReader').run('k:9', noScan=True)") == [[], []]
    assert gears(r, "python",
                 "GB('KeysOnlyReader').run(patternGenerator=lambda: ('k:3', True))") == [["k:3"], []]


def test_glob_patterns(r):
    for key in ["a1", "a2", "b1", "ab", "a*"]:
        r.set(key, "v")
    run = "GB('KeysOnlyReader').run('%s')"
    assert sorted(gears(r, "python", run % "a?")[0]) == ["a*", "a1", "a2", "ab"]
    assert sorted(gears(r, "python", run % "[ab]1")[0]) == ["a1", "b1"]
    assert sorted(gears(r, "python", run % "a\\\\*")[0]) == ["a*"]


def test_run_option_errors(r):
    assert gears_error(r, "python", "GB().run(mode='sync')") == py_error(
        "<module>", "gears.error: unknown execution mode")
    assert gears_error(r, "python", "GB().run(noScan=1)") == py_error(
        "<module>", "gears.error: exactMatch value is not boolean")
    assert gears_error(r, "python", "GB('StreamReader').run('s', fromId=1)") == py_error(
        "<module>", "gears.error: fromId argument must be a string")
    assert gears_error(r, "python", "GB('PythonReader').run()") == py_error(
        "<module>", "gears.error: pyreader argument must be a function")


def test_mode_and_collect_options_keep_single_node_results(r):
    r.set("x", "1")
    assert gears(r, "python", "GB().map(lambda x: x['key']).run(mode='async_local', collect=False)") == \
        [["x"], []]


def test_status_and_error_strings_in_results(r):
    script = "GB('ShardsIDReader').flatmap(lambda x: ['+OK', '-ERR bad', '-', 'plain']).run()"
    reply = gears(r, "python", script)
    results = reply[0]
    assert results[0] == "plain"
    assert results[1] == "-"
    assert isinstance(results[2], redis.ResponseError) and str(results[2]) == "bad"
    assert results[3] == "OK"


def test_one_globals_dict_per_script(r):
    assert gears(r, "python", "counter = 41") == "OK"
    assert gears(r, "python", "GB('ShardsIDReader').map(lambda x: counter).run()") == \
        [[], [py_error("<lambda>", "NameError: name 'counter' is not defined")]]


def test_atomic_blocks_other_clients_between_commands(r, server):
    import threading
    # A busy wait: sleeping inside an atomic block is refused (it would hold the Redis lock).
    script = ("import time\n"
              "def f(x):\n"
              "    with atomic():\n"
              "        execute('SET', 'a', '1')\n"
              "        end = time.monotonic() + 0.5\n"
              "        while time.monotonic() < end:\n"
              "            pass\n"
              "        execute('SET', 'b', '2')\n"
              "GB('ShardsIDReader').foreach(f).run()")
    job_client = server.new_client()
    done = {}
    job = threading.Thread(target=lambda: done.update(reply=job_client.execute_command("RG.PYEXECUTE", script)))
    job.start()
    seen = set()
    watcher = server.new_client()
    while job.is_alive():
        seen.add(tuple(watcher.mget("a", "b")))
    job.join()
    assert done["reply"] == [["1"], []]
    assert seen <= {(None, None), ("1", "2")}
    assert ("1", "2") in seen


def test_nested_atomic_is_an_error(r):
    script = ("def f(x):\n"
              "    with atomic():\n"
              "        with atomic():\n"
              "            pass\n"
              "GB('ShardsIDReader').foreach(f).run()")
    results, errors = gears(r, "python", script)
    assert results == []
    assert len(errors) == 1 and errors[0].endswith("'gears.error: Already inside an atomic block\\n']")


def test_an_unclosed_atomic_block_is_released(r):
    script = "GB('ShardsIDReader').foreach(lambda x: atomic().__enter__()).run()"
    assert gears(r, "python", script) == [["1"], []]
    assert r.ping()
    assert gears(r, "python", "GB('ShardsIDReader').run()") == [["1"], []]


def test_groupby_argument_errors(r):
    assert gears_error(r, "python", "GB().groupby(lambda x: x)") == py_error(
        "<module>", "gears.error: wrong number of args to groupby function")
    assert gears_error(r, "python", "GB().groupby(1, lambda k, a, r: a)") == py_error(
        "<module>", "gears.error: groupby extractor argument must be a function")
    assert gears_error(r, "python", "GB().batchgroupby(lambda x: x, 2)") == py_error(
        "<module>", "gears.error: batchgroupby reducer argument must be a function")


CONFIG_AND_HASHTAG = {
    "lua": "GB('ShardsIDReader'):map(function(x) return {configGet('MySetting'), gearsConfigGet('Nope', 'fallback'), hashtag()} end):run()",
    "rhai": 'GB("ShardsIDReader").map(|x| [configGet("MySetting"), gearsConfigGet("Nope", "fallback"), hashtag()]).run()',
}


@pytest.mark.parametrize("language", ["lua", "rhai"])
def test_config_and_hashtag_in_lua_and_rhai(r, language):
    assert gears(r, language, CONFIG_AND_HASHTAG[language]) == [["['hello', 'fallback', '06S']"], []]


ATOMIC = {
    "lua": "GB('ShardsIDReader'):foreach(function(x) atomic(function() execute('SET', 'a', '1') execute('SET', 'b', '2') end) end):run()",
    "rhai": 'GB("ShardsIDReader").foreach(|x| atomic(|| { execute("SET", "a", "1"); execute("SET", "b", "2"); })).run()',
}


@pytest.mark.parametrize("language", ["lua", "rhai"])
def test_atomic_in_lua_and_rhai(r, language):
    assert gears(r, language, ATOMIC[language]) == [["1"], []]
    assert r.mget("a", "b") == ["1", "2"]


def test_a_satisfied_limit_stops_reading(r):
    r.eval("for i = 1, 50000 do redis.call('SET', 'k:' .. i, i) end", 0)
    script = "GB().foreach(lambda x: execute('INCR', 'visited')).limit(3).map(lambda x: 1).run('k:*')"
    assert gears(r, "python", script) == [["1", "1", "1"], []]
    # Only the first batch was read and processed, not all 50,000 keys.
    assert 3 <= int(r.get("visited")) <= 5000


LOG = {
    "lua": "log('from lua') log('lua careful', 'warning')",
    "rhai": 'log("from rhai"); log("rhai careful", "warning");',
}


@pytest.mark.parametrize("language", ["lua", "rhai"])
def test_log_in_lua_and_rhai(r, server, language):
    assert gears(r, language, LOG[language]) == "OK"
    deadline = time.time() + 5
    while time.time() < deadline and ("%s careful" % language) not in server.read_log():
        time.sleep(0.05)
    log = server.read_log()
    assert ("* <rg> GEARS: from %s" % language) in log
    assert ("# <rg> GEARS: %s careful" % language) in log
