"""Timers: RedisGears' `registerTE` (Python; `register_timer` in Lua and Rhai) and TimerReader
registrations on an interval or a cron schedule: once per point, on the master only, kept with
their session (restart, replica), stopped by their key or by an error, listed and paused."""
import time

import pytest
import redis

from conftest import RedisServer
from helpers import gears, gears_error, py_error, raw_error, wait_for

SHARD = "0" * 40

TE_COUNTER = """
def func():
    execute('set', 'x', str(int(execute('get', 'x')) + 1))
registerTE(1, func, 'timeEvent')
"""


def counter(client, key="x"):
    return int(client.get(key) or 0)


def test_register_te_runs_every_second_until_its_key_is_deleted(rr, server):
    rr.set("x", "1")
    assert gears(rr, "python", TE_COUNTER) == "OK"
    assert sorted(rr.keys("*")) == ["timeEvent", "x"]
    assert rr.type("timeEvent") == "gears-tmr"
    assert wait_for(lambda: counter(rr) >= 3, timeout=5)
    [registration] = rr.execute_command("RG.DUMPREGISTRATIONS")
    data = registration[7]
    next_run = data[data.index("args") + 1][7]
    assert abs(next_run / 1000 - time.time()) <= 1.1
    assert registration[:6] == ["id", registration[1], "reader", "TimerReader", "desc",
                                "registerTE(1, func)"]
    assert data[:2] == ["mode", "sync"]
    assert data[data.index("lastError") + 1] is None
    assert data[data.index("args") + 1] == ["schedule", "every 1s", "key", "timeEvent",
                                            "stopOnError", 1, "nextRunUnixMS", next_run]
    # Deleting the key ends it: its next point finds the key gone and unregisters it.
    assert rr.delete("timeEvent") == 1
    assert wait_for(lambda: rr.execute_command("RG.DUMPREGISTRATIONS") == [], timeout=3)
    stopped = counter(rr)
    time.sleep(1.3)
    assert counter(rr) == stopped
    assert "its key was deleted or overwritten: the timer ends" in server.read_log()
    assert rr.keys("*") == ["x"]


def crc64(data):
    """Redis's CRC-64 (Jones polynomial, reflected), which ends every DUMP payload."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x95AC9329AC4BC9B5 if c & 1 else c >> 1
        table.append(c)
    crc = 0
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def test_a_corrupt_timer_key_payload_is_refused_not_a_crash(rr, server):
    # RESTORE needs no Gears right: a short or damaged gears-tmr value must be an error reply
    # (Redis panics on a module's read past the end unless the module handles IO errors).
    assert gears(rr, "python", TE_COUNTER) == "OK"
    raw = server.new_client(decode_responses=False)
    payload = raw.dump("timeEvent")
    body, version = payload[:-10], payload[-10:-8]
    try:
        # Every cut of the value: refused, or (when the bytes after the cut happen to complete
        # it, its string being compressed) a timer key of a registration that does not exist.
        outcomes = []
        for cut in range(9, len(body)):
            damaged = body[:cut] + version
            damaged += crc64(damaged).to_bytes(8, "little")
            try:
                outcomes.append(raw.restore(b"copy", 0, damaged, replace=True))
            except redis.ResponseError as error:
                outcomes.append(str(error))
            assert raw.ping()
        assert set(outcomes) <= {"Bad data format", b"OK"}, outcomes
        # No value at all, or the registration's id cut short.
        assert outcomes[0] == outcomes[1] == outcomes[2] == "Bad data format", outcomes
        # The whole payload still restores.
        assert raw.restore(b"copy", 0, payload, replace=True)
        assert rr.type("copy") == "gears-tmr"
    finally:
        rr.delete("copy", "timeEvent")
    assert server.alive()


def test_register_te_answers_false_when_the_key_holds_something():
    s = RedisServer()
    try:
        c = s.new_client()
        c.set("taken", "mine")
        script = ("r = registerTE(1, lambda: execute('incr', 'n'), 'taken')\n"
                  "GB('ShardsIDReader').map(lambda x: str(r)).run()")
        assert c.execute_command("RG.PYEXECUTE", script) == [["False"], []]
        assert c.get("taken") == "mine"
        assert c.execute_command("RG.DUMPREGISTRATIONS") == []
        # A live timer keeps its key from other sessions.
        assert gears(c, "python", "registerTE(1, lambda: execute('incr', 'n'), 'tk')") == "OK"
        assert c.execute_command("RG.PYEXECUTE", script.replace("'taken'", "'tk'")) == [
            ["False"], []]
        assert len(c.execute_command("RG.DUMPREGISTRATIONS")) == 1
    finally:
        s.stop()


@pytest.mark.parametrize("script,error", [
    ("registerTE(2, 2)", "callback must be a function"),
    ("registerTE('2', lambda: None)", "time argument must be a long"),
    ("registerTE(1)", "not enough arguments for time event"),
    ("registerTE(1, lambda: None, 'k', 4)", "not enough arguments for time event"),
    ("registerTE(0, lambda: None)", "time argument must be a positive number of seconds"),
    ("registerTE(1, lambda: None, 3)", "key argument must be a string"),
    ("registerTE(1, lambda: None, '')", "key argument must be a non-empty string"),
    ("registerTE(10**16, lambda: None)",
     "time argument must be at most 3153600000 seconds (100 years)"),
    ("GB('TimerReader').register(interval=1e16)",
     "interval argument must be at most 3153600000 seconds (100 years)"),
    ("GB('TimerReader').register()",
     "TimerReader needs interval=<seconds> or schedule='<cron expression>'"),
    ("GB('TimerReader').register(interval=0.001)",
     "interval argument must be at least 0.01 seconds"),
    ("GB('TimerReader').register(interval=1, schedule='* * * * *')",
     "TimerReader takes interval or schedule, not both"),
    ("GB('TimerReader').register(schedule='61 * * * *')",
     'schedule is not a valid cron expression ("61 * * * *"): Component error: Number out '
     'of bounds.'),
    ("GB('TimerReader').run()", "Given reader do not support run or not exists"),
])
def test_bad_timers_get_redisgears_errors(rr, script, error):
    assert gears_error(rr, "python", script) == py_error("<module>", "gears.error: " + error)
    assert rr.execute_command("RG.DUMPREGISTRATIONS") == []


def test_a_timer_years_away_waits(rr):
    # Redis keeps timers in microseconds: a wait this long is armed in hops (it overflowed and
    # fired in a tight loop).
    assert gears(rr, "python", "registerTE(3153600000, lambda: execute('incr', 'n'))") == "OK"
    assert gears(rr, "python", "GB('TimerReader').foreach(lambda r: execute('incr', 'm'))"
                 ".register(interval=2**31)") == "OK"
    time.sleep(1)
    assert (rr.get("n"), rr.get("m")) == (None, None)
    nexts = sorted(r[7][r[7].index("args") + 1][7]
                   for r in rr.execute_command("RG.DUMPREGISTRATIONS"))
    assert abs(nexts[0] / 1000 - (time.time() + 2**31)) < 5
    assert abs(nexts[1] / 1000 - (time.time() + 3153600000)) < 5


def test_a_sync_timer_that_holds_the_server_too_long_ends(rr, server):
    rr.execute_command("RG.CONFIGSET", "AtomicBlockMaxTime", "200")
    try:
        assert gears(rr, "lua", "GB('TimerReader'):foreach(function(r) while true do end end)"
                     ":register({interval = 0.3, mode = 'sync'})") == "OK"
        assert wait_for(lambda: rr.execute_command("RG.DUMPREGISTRATIONS") == [], timeout=5)
        assert rr.ping()
        assert "a run failed, so the timer ends: BUSY the atomic block ran longer than 200 ms" \
            in server.read_log()
    finally:
        rr.execute_command("RG.CONFIGSET", "AtomicBlockMaxTime", "5000")


def test_a_failing_time_event_stops(rr, server):
    script = """
def tick():
    n = int(execute('incr', 'calls'))
    if n == 2:
        raise Exception('second call fails')
registerTE(1, tick)
"""
    assert gears(rr, "python", script) == "OK"
    assert wait_for(lambda: rr.execute_command("RG.DUMPREGISTRATIONS") == [], timeout=5)
    time.sleep(1.3)
    assert rr.get("calls") == "2"
    assert "a run failed, so the timer ends: " in server.read_log()
    assert "second call fails" in server.read_log()


CRON = {
    "python": "GB('TimerReader').foreach(lambda r: execute('rpush', 'ticks', r['time'], "
              "r['schedule'])).register(schedule='*/1 * * * * *')",
    "lua": "GB('TimerReader'):foreach(function(r) execute('rpush', 'ticks', r.time, r.schedule) "
           "end):register({schedule = '*/1 * * * * *'})",
    "rhai": 'GB("TimerReader").foreach(|r| execute("rpush", "ticks", r.time, r.schedule))'
            '.register(#{schedule: "*/1 * * * * *"})',
}


@pytest.mark.parametrize("language", sorted(CRON))
def test_a_cron_schedule_runs_once_per_point(rr, language):
    assert gears(rr, language, CRON[language]) == "OK"
    assert wait_for(lambda: rr.llen("ticks") >= 6, timeout=6)
    ticks = rr.lrange("ticks", 0, -1)
    times = [int(t) for t in ticks[0::2]]
    assert set(ticks[1::2]) == {"*/1 * * * * *"}
    # One run per second, each for its own point, none twice.
    assert times == list(range(times[0], times[0] + len(times)))
    [registration] = rr.execute_command("RG.DUMPREGISTRATIONS")
    data = registration[7]
    assert registration[3] == "TimerReader"
    assert data[:2] == ["mode", "async"]
    args = data[data.index("args") + 1]
    assert args[:6] == ["schedule", "*/1 * * * * *", "key", None, "stopOnError", 0]
    # Points are whole seconds.
    assert args[7] % 1000 == 0


def test_an_interval_registration_goes_on_after_errors_and_can_be_paused(rr):
    script = ("GB('TimerReader').foreach(lambda r: execute('incr', 'runs') and "
              "execute('hset', 'h', 'f')).register(interval=0.2)")
    assert gears(rr, "python", script) == "OK"
    assert wait_for(lambda: counter(rr, "runs") >= 3, timeout=3)
    [registration] = rr.execute_command("RG.DUMPREGISTRATIONS")
    data = registration[7]
    assert data[data.index("numFailures") + 1] >= 2
    assert "wrong number of arguments" in data[data.index("lastError") + 1]
    assert data[data.index("args") + 1][1] == "every 200ms"
    rid = registration[1]
    assert rr.execute_command("RG.PAUSEREGISTRATIONS", rid) == "OK"
    time.sleep(0.3)
    paused = counter(rr, "runs")
    time.sleep(0.6)
    assert counter(rr, "runs") == paused
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", rid) == "OK"
    assert wait_for(lambda: counter(rr, "runs") >= paused + 2, timeout=3)


REGISTER_TIMER = {
    "lua": "register_timer(1, function() execute('incr', 'x') end, 'tk')",
    "rhai": 'register_timer(1, || execute("incr", "x"), "tk")',
}


@pytest.mark.parametrize("language", sorted(REGISTER_TIMER))
def test_register_timer_in_lua_and_rhai(rr, language):
    assert gears(rr, language, REGISTER_TIMER[language]) == "OK"
    assert rr.type("tk") == "gears-tmr"
    assert wait_for(lambda: counter(rr) >= 2, timeout=4)
    [registration] = rr.execute_command("RG.DUMPREGISTRATIONS")
    assert registration[5] == "register_timer(1)"
    assert registration[7][:2] == ["mode", "sync"]
    # The key is taken: a second timer on it is refused (false).
    probe = {
        "lua": "local r = register_timer(1, function() end, 'tk')\n"
               "GB('ShardsIDReader'):map(function(x) return tostring(r) end):run()",
        "rhai": 'let r = register_timer(1, || 1, "tk");\n'
                'GB("ShardsIDReader").map(|x| `${r}`).run()',
    }[language]
    assert rr.execute_command("RG.%sEXECUTE" % language.upper(), probe) == [["false"], []]
    rr.delete("tk")
    assert wait_for(lambda: rr.execute_command("RG.DUMPREGISTRATIONS") == [], timeout=3)


@pytest.mark.parametrize("language,script,error", [
    ("lua", "register_timer(1)", "not enough arguments for time event"),
    ("lua", "register_timer(1, 2)", "callback must be a function"),
    ("lua", "register_timer('a', function() end)", "time argument must be a long"),
    ("lua", "register_timer(-1, function() end)",
     "time argument must be a positive number of seconds"),
    ("rhai", "register_timer(1, 2)", "callback must be a function"),
    ("rhai", 'register_timer("a", || 1)', "time argument must be a long"),
    ("rhai", "register_timer(1, || 1, 5)", "key argument must be a string"),
    ("lua", "register_timer(1, function() end, '')", "key argument must be a non-empty string"),
    ("rhai", 'register_timer(1, || 1, "")', "key argument must be a non-empty string"),
    ("lua", "register_timer(10000000000, function() end)",
     "time argument must be at most 3153600000 seconds (100 years)"),
])
def test_register_timer_errors(rr, language, script, error):
    assert error in gears_error(rr, language, script)
    assert rr.execute_command("RG.DUMPREGISTRATIONS") == []


def test_time_events_survive_a_restart_and_debug_reload():
    s = RedisServer()
    try:
        c = s.new_client()
        c.set("x", "1")
        assert gears(c, "python", TE_COUNTER) == "OK"
        assert gears(c, "lua", "register_timer(1, function() execute('incr', 'y') end)") == "OK"
        assert gears(c, "rhai", 'GB("TimerReader").foreach(|r| execute("incr", "z"))'
                     '.register(#{schedule: "* * * * * *"})') == "OK"
        assert wait_for(lambda: counter(c) >= 2, timeout=4)
        # DEBUG RELOAD changes nothing: still one run per second, not two.
        c.execute_command("DEBUG", "RELOAD")
        start, started = counter(c), time.time()
        time.sleep(3.2)
        runs = counter(c) - start
        assert 2 <= runs <= int(time.time() - started) + 1
        c.save()
        s.stop(keep_dir=True)
        s = RedisServer(dir=s.dir)
        c = s.new_client()
        assert sorted(c.keys("*")) == ["timeEvent", "x", "y", "z"]
        before, y_before, z_before = counter(c), counter(c, "y"), counter(c, "z")
        assert wait_for(lambda: counter(c) >= before + 2 and counter(c, "y") >= y_before + 2
                        and counter(c, "z") >= z_before + 2, timeout=4)
        assert len(c.execute_command("RG.DUMPREGISTRATIONS")) == 3
        c.delete("timeEvent")
        assert wait_for(lambda: len(c.execute_command("RG.DUMPREGISTRATIONS")) == 2, timeout=3)
    finally:
        s.stop()


def test_timers_run_on_the_master_only_and_a_promoted_replica_takes_over():
    master = RedisServer(server_args=("--repl-diskless-sync-delay", "0"))
    replica = None
    try:
        m = master.new_client()
        m.set("x", "1")
        assert gears(m, "python", TE_COUNTER) == "OK"
        replica = RedisServer(server_args=("--replicaof", "127.0.0.1", str(master.port)))
        r = replica.new_client()
        assert wait_for(lambda: r.info("replication").get("master_link_status") == "up")
        assert wait_for(lambda: len(r.execute_command("RG.DUMPREGISTRATIONS")) == 1)
        assert r.type("timeEvent") == "gears-tmr"
        # A session made after the sync reaches it with its key.
        assert gears(m, "python", "registerTE(1, lambda: execute('incr', 'z'), 'k2')") == "OK"
        assert wait_for(lambda: r.type("k2") == "gears-tmr")
        seen = counter(r)
        assert wait_for(lambda: counter(r) >= seen + 2, timeout=4)
        # The replica's copies never ran (the writes it has are the master's).
        for registration in r.execute_command("RG.DUMPREGISTRATIONS"):
            assert registration[7][registration[7].index("numTriggered") + 1] == 0
        # A client can not write a timer's key itself.
        assert raw_error(m, "RG.INNERTIMERKEY", "k3", "id") == (
            "ERR RG.INNERTIMERKEY is internal to Gears (replication and AOF)")
        master.stop()
        master = None
        r.execute_command("REPLICAOF", "NO", "ONE")
        promoted = counter(r)
        assert wait_for(lambda: counter(r) >= promoted + 2, timeout=4)
    finally:
        if replica:
            replica.stop()
        if master:
            master.stop()


def test_an_upgrade_takes_over_its_own_timer_key(rr):
    rr.set("x", "0")
    script = "registerTE(1, lambda: execute('incrby', 'x', '%d'), 'tk')"
    assert gears(rr, "python", script % 1, "ID", "timers") == "OK"
    [old] = [r[1] for r in rr.execute_command("RG.DUMPREGISTRATIONS")]
    assert gears(rr, "python", script % 100, "ID", "timers", "UPGRADE") == "OK"
    [new] = [r[1] for r in rr.execute_command("RG.DUMPREGISTRATIONS")]
    assert new != old
    start = counter(rr)
    assert wait_for(lambda: counter(rr) >= start + 200, timeout=4)
    assert (counter(rr) - start) % 100 == 0
    assert rr.type("tk") == "gears-tmr"


def test_a_user_who_may_not_write_the_key_gets_no_timer(server):
    admin = server.new_client()
    admin.flushall()
    admin.execute_command("ACL", "SETUSER", "tmr", "on", ">pw", "+@all", "%R~*", "%W~mine:*")
    try:
        c = server.new_client(username="tmr", password="pw")
        assert gears_error(c, "python", "registerTE(1, lambda: None, 'other')") == py_error(
            "<module>", "gears.error: NOPERM this user may not write the timer's key 'other'")
        assert gears(c, "python", "registerTE(1, lambda: None, 'mine:t')") == "OK"
        assert admin.type("mine:t") == "gears-tmr"
        for registration in admin.execute_command("RG.DUMPREGISTRATIONS"):
            admin.execute_command("RG.UNREGISTER", registration[1])
    finally:
        admin.execute_command("ACL", "DELUSER", "tmr")


def test_in_a_cluster_every_shard_runs_a_timer_and_a_keyed_one_runs_on_its_key_s_shard():
    from cluster import Cluster
    cluster = Cluster(masters=3)
    try:
        cc = cluster.client()
        nodes = {n.port: n.client for n in cluster.masters}
        port, first = next(iter(nodes.items()))
        # Without a key: every shard's master runs it, each for its own keys.
        script = ("GB('TimerReader').foreach(lambda r: execute('incr', 'ticks{%s}' % hashtag()))"
                  ".register(interval=0.3)")
        assert gears(first, "python", script) == "OK"
        for client in nodes.values():
            assert wait_for(lambda: len(client.keys("ticks*")) == 1
                            and int(client.get(client.keys("ticks*")[0])) >= 2, timeout=5)
        # With a key: it must be on the shard that runs the script, and runs there only.
        names = ["tk%d" % i for i in range(40)]
        mine = next(k for k in names if cc.get_node_from_key(k).port == port)
        other = next(k for k in names if cc.get_node_from_key(k).port != port)
        error = gears_error(first, "python", "registerTE(1, lambda: None, '%s')" % other)
        assert "a timer's key must be on the shard that runs the script: '%s' is in slot %d, " \
               "served by another shard" % (other, cc.keyslot(other)) in error
        te = "registerTE(1, lambda: execute('incr', 'te{%%s}' %% hashtag()), '%s')" % mine
        assert gears(first, "python", te) == "OK"
        assert first.type(mine) == "gears-tmr"
        # A key named with hashtag() at the top level is the same key on every shard (the
        # initiator's tag; it was each shard's own, and the other shards ended the timer).
        assert gears(first, "python", "registerTE(1, lambda: execute('incr', 'ht{%s}' % "
                     "hashtag()), 'tag{%s}' % hashtag())") == "OK"
        keys = {client.execute_command("RG.DUMPREGISTRATIONS")[-1][7][-1][3]
                for client in nodes.values()}
        assert len(keys) == 1 and first.type(keys.pop()) == "gears-tmr"
        assert wait_for(lambda: int(first.get(first.keys("ht*")[0]) if first.keys("ht*")
                                    else 0) >= 2, timeout=5)
        [tag_id] = [r[1] for r in first.execute_command("RG.DUMPREGISTRATIONS")
                    if (r[7][-1][3] or "").startswith("tag")]
        first.execute_command("RG.UNREGISTER", tag_id)
        assert wait_for(lambda: int(first.get(first.keys("te*")[0]) if first.keys("te*")
                                    else 0) >= 2, timeout=5)
        for p, client in nodes.items():
            if p != port:
                assert client.keys("te*") == []
                assert len(client.execute_command("RG.DUMPREGISTRATIONS")) == 2
        # Its key deleted, it ends on every shard.
        first.delete(mine)
        for client in nodes.values():
            assert wait_for(lambda: len(client.execute_command("RG.DUMPREGISTRATIONS")) == 1,
                            timeout=5)
    finally:
        cluster.stop()
