"""RG.PYPROFILE: cProfile's statistics of a Python session's callbacks, recorded while
ProfileExecutions is 1 (RedisGears 1.2's pytest/test_profile.py, with exact replies and call
counts)."""
import re

import pytest

from helpers import gears, raw_error, wait_for

CAN_NOT_BLOCK = "Can not run gears inside a multi exec, lua, or when blocking is not allowed"
NO_INFO = ("session %s has no profile information (profiling is on while ProfileExecutions "
           "is 1)")

# RedisGears 1.2's testProfile script: one callback of each kind.
PIPELINE = """
def map_func(r):
    return r

def filter_func(r):
    return True

def flat_map_func(r):
    return [r]

def foreach_func(r):
    pass

def aggregate_func(a, r):
    return a

def aggregateby_func(g, a, r):
    return a

def extractor_func(a):
    return str(a)

GB('CommandReader').map(map_func).filter(filter_func).flatmap(flat_map_func)\\
    .foreach(foreach_func).aggregate(0, aggregate_func, aggregate_func)\\
    .aggregateby(extractor_func, 0, aggregateby_func, aggregateby_func).register(trigger='%s')
"""
CALLBACKS = ["map_func", "filter_func", "flat_map_func", "foreach_func", "aggregate_func",
             "aggregateby_func", "extractor_func"]

# One line of print_stats: ncalls[/primitive] tottime percall cumtime percall function.
STATS_LINE = re.compile(r"\s*(\d+)(?:/\d+)?\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(\S.*)$")


def rows(text):
    """print_stats' rows, in order: (function, ncalls)."""
    rows = []
    for line in text.split("\n\n\n")[0].splitlines():
        m = STATS_LINE.match(line)
        if m:
            rows.append((m.group(2), int(m.group(1))))
    return rows


def ncalls(text, name):
    """The calls of the script's function `name` (`<string>:LINE(name)`), None if not listed."""
    found = [n for f, n in rows(text) if re.fullmatch(r"<string>:\d+\(%s\)" % re.escape(name), f)]
    assert len(found) <= 1, text
    return found[0] if found else None


def stats(client, session, *order):
    return client.execute_command("RG.PYPROFILE", "STATS", session, *order)


@pytest.fixture
def profiling(rr):
    """ProfileExecutions 1 for the test."""
    assert rr.execute_command("RG.CONFIGSET", "ProfileExecutions", "1") == ["OK"]
    yield rr
    rr.execute_command("RG.CONFIGSET", "ProfileExecutions", "0")


def test_errors_are_redisgears_ones(rr):
    assert raw_error(rr, "RG.PYPROFILE") == \
        "ERR wrong number of arguments for 'RG.PYPROFILE' command"
    assert raw_error(rr, "RG.PYPROFILE", "FOO") == "Wrong subcommand given to RG.PYPROFILE"
    assert raw_error(rr, "RG.PYPROFILE", "FOO", "x") == "Wrong subcommand given to RG.PYPROFILE"
    for subcommand in ("STATS", "stats", "RESET", "Reset"):
        assert raw_error(rr, "RG.PYPROFILE", subcommand, "nosuch") == "session does not exists"
    for command in (("STATS",), ("STATS", "s", "tottime", "x"), ("RESET",), ("RESET", "s", "x")):
        assert raw_error(rr, "RG.PYPROFILE", *command) == \
            "ERR wrong number of arguments for 'RG.PYPROFILE' command"
    # A Lua or Rhai session is no Python session.
    gears(rr, "lua", "GB('CommandReader'):register({trigger = 'lua'})", "ID", "lua")
    assert raw_error(rr, "RG.PYPROFILE", "STATS", "lua") == "session does not exists"


def test_stats_name_every_callback_and_count_its_calls(profiling):
    r = profiling
    assert gears(r, "python", PIPELINE % "test", "ID", "prof") == "OK"
    for i in range(5):
        r.execute_command("RG.TRIGGER", "test", str(i))
    text = stats(r, "prof")
    for name in CALLBACKS:
        assert name in text
    # One call per record of the steps that see each record.
    for name in ("map_func", "filter_func", "flat_map_func", "foreach_func", "extractor_func"):
        assert ncalls(text, name) == 5, (name, text)
    # pstats' three reports, in RedisGears 1.2's default order (internal time).
    assert re.match(r"\s+\d+ function calls( \(\d+ primitive calls\))? in \d+\.\d+ seconds\n",
                    text), text
    assert text.count("Ordered by: internal time") == 3
    assert "was called by..." in text and "called..." in text
    assert "filename:lineno(function)" in text
    # Gears switches the profiler from Rust: its own calls do not show (1.2 showed profileStop).
    assert "_lsprof" not in text and "profileStop" not in text
    tottimes = [float(line.split()[1]) for line in text.split("\n\n\n")[0].splitlines()
                if STATS_LINE.match(line)]
    assert tottimes == sorted(tottimes, reverse=True)


@pytest.mark.parametrize("order, words", [
    ("ncalls", "call count"), ("cumtime", "cumulative time"), ("name", "function name"),
    ("tottime", "internal time"), ("calls", "call count"), ("cumul", "cumulative time"),
])
def test_order_is_honoured(profiling, order, words):
    r = profiling
    gears(r, "python", PIPELINE % "test", "ID", "prof")
    for i in range(3):
        r.execute_command("RG.TRIGGER", "test", str(i))
    text = stats(r, "prof", order)
    assert text.count("Ordered by: %s" % words) == 3, text
    assert ncalls(text, "map_func") == 3
    listed = rows(text)
    if words == "call count":
        counts = [n for _, n in listed]
        assert counts == sorted(counts, reverse=True)
    if words == "function name":
        names = [re.search(r"\(([^()]*)\)$", f).group(1) if f.startswith("<") else f
                 for f, _ in listed]
        script = [n for n in names if n in CALLBACKS]
        assert script == sorted(script)


def test_an_unknown_order_is_an_error(profiling):
    r = profiling
    gears(r, "python", PIPELINE % "test", "ID", "prof")
    r.execute_command("RG.TRIGGER", "test", "x")
    assert raw_error(r, "RG.PYPROFILE", "STATS", "prof", "foo") == (
        "unknown order 'foo', expected one of calls, cumtime, cumulative, filename, line, module,"
        " name, ncalls, nfl, pcalls, stdname, time, tottime (or a unique prefix of one)")


def test_reset_forgets_and_profiling_goes_on(profiling):
    r = profiling
    gears(r, "python", PIPELINE % "test", "ID", "prof")
    r.execute_command("RG.TRIGGER", "test", "x")
    assert ncalls(stats(r, "prof"), "map_func") == 1
    assert r.execute_command("RG.PYPROFILE", "RESET", "prof") == "OK"
    # RedisGears 1.2: STATS of a session with nothing profiled is an error.
    assert raw_error(r, "RG.PYPROFILE", "STATS", "prof") == NO_INFO % "prof"
    r.execute_command("RG.TRIGGER", "test", "y")
    r.execute_command("RG.TRIGGER", "test", "z")
    assert ncalls(stats(r, "prof"), "map_func") == 2


def test_only_calls_while_profile_executions_is_1_are_profiled(rr):
    gears(rr, "python", PIPELINE % "test", "ID", "prof")
    rr.execute_command("RG.TRIGGER", "test", "off")
    assert raw_error(rr, "RG.PYPROFILE", "STATS", "prof") == NO_INFO % "prof"
    rr.execute_command("RG.CONFIGSET", "ProfileExecutions", "1")
    try:
        rr.execute_command("RG.TRIGGER", "test", "on")
        rr.execute_command("RG.TRIGGER", "test", "on")
    finally:
        rr.execute_command("RG.CONFIGSET", "ProfileExecutions", "0")
    rr.execute_command("RG.TRIGGER", "test", "off")
    assert ncalls(stats(rr, "prof"), "map_func") == 2


def test_the_session_id_is_pydumpsessions_one(profiling):
    """Without ID a session is named after the execution that ran its script."""
    r = profiling
    gears(r, "python", PIPELINE % "test")
    [session] = r.execute_command("RG.PYDUMPSESSIONS")
    r.execute_command("RG.TRIGGER", "test", "x")
    assert ncalls(stats(r, session[1]), "foreach_func") == 1


def test_on_registered_and_async_key_registrations_are_profiled(profiling):
    r = profiling
    script = """
def on_registered():
    pass

def count(x):
    return x

GB().map(count).register(prefix='p:*', onRegistered=on_registered)
"""
    gears(r, "python", script, "ID", "keys")
    for i in range(20):
        r.set("p:%d" % i, i)
    wait_for(lambda: ncalls(stats(r, "keys"), "count") == 20)
    text = stats(r, "keys")
    assert ncalls(text, "count") == 20
    assert ncalls(text, "on_registered") == 1


def test_a_callback_inside_a_callback_is_its_own_sessions(profiling):
    """A callback's execute() runs another session's sync registration on the same thread:
    that session's profiler takes the thread over, then gives it back."""
    r = profiling
    gears(r, "python", "def inner_func(x):\n    pass\n"
          "GB().foreach(inner_func).register(prefix='nest:*', mode='sync', readValue=False)",
          "ID", "inner")
    gears(r, "python", "def outer_func(x):\n    execute('SET', 'nest:1', 'v')\n    return x\n"
          "def after(x):\n    return x\n"
          "GB('CommandReader').map(outer_func).map(after).register(trigger='nest')", "ID", "outer")
    for i in range(3):
        r.execute_command("RG.TRIGGER", "nest")
    inner, outer = stats(r, "inner"), stats(r, "outer")
    assert ncalls(inner, "inner_func") == 3
    assert ncalls(inner, "outer_func") is None
    assert ncalls(outer, "outer_func") == 3
    # The outer profiler was enabled again: the next callback is still counted.
    assert ncalls(outer, "after") == 3
    assert ncalls(outer, "inner_func") is None


def test_a_run_execution_is_a_session_by_its_id(profiling):
    r = profiling
    for i in range(7):
        r.set("k:%d" % i, i)
    script = "def map_func(r):\n    return r['key']\nGB().map(map_func).run('k:*')"
    execution = gears(r, "python", script, "UNBLOCKING")
    assert len(r.execute_command("RG.GETRESULTSBLOCKING", execution)[0]) == 7
    assert ncalls(stats(r, execution), "map_func") == 7
    assert r.execute_command("RG.PYPROFILE", "RESET", execution) == "OK"
    assert raw_error(r, "RG.PYPROFILE", "STATS", execution) == NO_INFO % execution
    r.execute_command("RG.DROPEXECUTION", execution)
    assert raw_error(r, "RG.PYPROFILE", "STATS", execution) == "session does not exists"
    # A PythonReader's function and its generator's steps are the script's code too.
    script = ("def gen():\n    for i in range(4):\n        yield i\n"
              "def double(x):\n    return x * 2\n"
              "GB('PythonReader').map(double).run(gen)")
    execution = gears(r, "python", script, "UNBLOCKING")
    r.execute_command("RG.GETRESULTSBLOCKING", execution)
    text = stats(r, execution)
    assert ncalls(text, "double") == 4
    assert ncalls(text, "gen") is not None


def test_stats_blocks_so_not_inside_multi_but_reset_can(profiling):
    r = profiling
    gears(r, "python", PIPELINE % "test", "ID", "prof")
    r.execute_command("RG.TRIGGER", "test", "x")
    pipe = r.pipeline(transaction=True)
    pipe.execute_command("RG.PYPROFILE", "STATS", "prof")
    pipe.execute_command("RG.PYPROFILE", "RESET", "prof")
    stats_reply, reset_reply = pipe.execute(raise_on_error=False)
    assert str(stats_reply) == CAN_NOT_BLOCK
    assert reset_reply == "OK"


def test_another_users_sessions_are_not_found(server, profiling):
    r = profiling
    gears(r, "python", PIPELINE % "test", "ID", "prof")
    r.execute_command("RG.TRIGGER", "test", "x")
    r.execute_command("ACL", "SETUSER", "eve", "on", ">pw", "~*", "+@all", "-client")
    eve = server.new_client(username="eve", password="pw")
    try:
        assert raw_error(eve, "RG.PYPROFILE", "STATS", "prof") == "session does not exists"
        assert raw_error(eve, "RG.PYPROFILE", "RESET", "prof") == "session does not exists"
    finally:
        r.execute_command("ACL", "DELUSER", "eve")
    assert ncalls(stats(r, "prof"), "map_func") == 1


def test_scripts_do_not_find_the_profilers(profiling):
    r = profiling
    gears(r, "python", PIPELINE % "test", "ID", "prof")
    r.execute_command("RG.TRIGGER", "test", "x")
    script = ("import gc, _lsprof\n"
              "GB('ShardsIDReader').map(lambda x: len([o for o in gc.get_objects()"
              " if type(o) is _lsprof.Profiler])).run()")
    assert gears(r, "python", script) == [["0"], []]
