"""Keyspace registrations (KeysReader `register()`), in Python, Lua and Rhai: modes, record
shapes, filters, RG.DUMPREGISTRATIONS, RG.UNREGISTER and the other management commands, ACL."""
import time

import pytest
import redis

from helpers import AUDIT, data, gears, gears_error, raw_error, registrations, wait_for

SHARD = "0" * 40

# Sync registrations that write: allowed on Redis 7.0 only with this setting (see
# test_sync_writes_on_redis_7_0_need_the_setting); Valkey and Redis 7.2+ need nothing.
SYNC_WRITES = ("SyncRegistrationWrites", "1")


@pytest.fixture(scope="module")
def server():
    from conftest import serve
    yield from serve(*SYNC_WRITES)




@pytest.mark.parametrize("language", sorted(AUDIT))
def test_the_audit_example_logs_every_audited_key(rr, language):
    assert gears(rr, language, AUDIT[language]) == "OK"
    rr.set("audited-1", "a")
    rr.set("plain", "b")
    rr.hset("audited-2", "f", "v")
    entries = wait_for(lambda: len(rr.xrange("audit-logs")) == 2 and rr.xrange("audit-logs"))
    assert [fields for _, fields in entries] == [{"key": "audited-1"}, {"key": "audited-2"}]
    # The async executions of its events are listed as registered ones.
    listed = rr.execute_command("RG.DUMPEXECUTIONS")
    assert listed and all(e[5] == 1 and e[3] == "done" for e in listed)


SYNC_COUNTER = {
    "python": "GB().foreach(lambda x: execute('INCR', 'count')).register(prefix='k:*', mode='sync')",
    "lua": "GB():foreach(function(x) execute('INCR', 'count') end):register('k:*', {mode = 'sync'})",
    "rhai": 'GB().foreach(|x| execute("INCR", "count")).register("k:*", #{mode: "sync"})',
}


@pytest.mark.parametrize("language", sorted(SYNC_COUNTER))
def test_sync_writes_are_done_before_the_command_replies(rr, language):
    assert gears(rr, language, SYNC_COUNTER[language]) == "OK"
    for i in range(1, 21):
        rr.set("k:%d" % i, "v")
        # No wait: the next command sees the registration's write.
        assert rr.get("count") == str(i)
    assert rr.get("count") == "20"
    assert rr.execute_command("RG.DUMPEXECUTIONS") == [
        ["executionId", e[1], "status", "done", "registered", 1]
        for e in rr.execute_command("RG.DUMPEXECUTIONS")]


ASYNC_COUNTER = {
    "python": "GB().foreach(lambda x: execute('INCR', 'count')).register('k:*')",
    "lua": "GB():foreach(function(x) execute('INCR', 'count') end):register('k:*')",
    "rhai": 'GB().foreach(|x| execute("INCR", "count")).register("k:*")',
}


@pytest.mark.parametrize("language", sorted(ASYNC_COUNTER))
def test_async_processes_every_event_once(rr, language):
    assert gears(rr, language, ASYNC_COUNTER[language]) == "OK"
    pipe = rr.pipeline(transaction=False)
    for i in range(2000):
        pipe.set("k:%d" % (i % 50), i)
    pipe.execute()
    assert wait_for(lambda: rr.get("count") == "2000") or rr.get("count") == "2000"
    time.sleep(0.1)
    assert rr.get("count") == "2000"
    stats = data(registrations(rr)[0])
    assert (stats["numTriggered"], stats["numSuccess"], stats["numFailures"]) == (2000, 2000, 0)


@pytest.mark.parametrize("mode", ["async", "async_local"])
def test_an_async_registration_is_not_queued_by_its_own_writes(rr, mode):
    """RedisGears 1.2 looped without end here (each INCR of kcount raised one more event)."""
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'kcount')).register("
                        "prefix='k*', mode='%s')" % mode)
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'other')).register("
                        "prefix='kcount', mode='%s')" % mode)
    rr.set("k1", "v")
    assert wait_for(lambda: rr.get("other") == "1")
    time.sleep(0.2)
    assert (rr.get("kcount"), rr.get("other")) == ("1", "1")
    assert data(registrations(rr)[0])["numTriggered"] == 1


# The record a registration's pipeline gets, kept by a sync registration as str(record).
SHAPE = "GB().foreach(lambda x: execute('SET', 'rec', str(x))).register(prefix='shape:*', mode='sync'%s)"


def test_record_shapes(rr):
    assert gears(rr, "python", SHAPE % "") == "OK"
    rr.set("shape:s", "v")
    assert rr.get("rec") == "{'event': 'set', 'key': 'shape:s', 'type': 'string', 'value': 'v'}"
    rr.hset("shape:h", mapping={"a": "1"})
    assert rr.get("rec") == "{'event': 'hset', 'key': 'shape:h', 'type': 'hash', 'value': {'a': '1'}}"
    rr.rpush("shape:l", "x", "y")
    assert rr.get("rec") == "{'event': 'rpush', 'key': 'shape:l', 'type': 'list', 'value': ['x', 'y']}"
    rr.sadd("shape:set", "m")
    assert rr.get("rec") == "{'event': 'sadd', 'key': 'shape:set', 'type': 'set', 'value': None}"
    rr.xadd("shape:x", {"f": "v"})
    assert rr.get("rec") == "{'event': 'xadd', 'key': 'shape:x', 'type': 'unknown', 'value': None}"
    rr.delete("shape:s")
    assert rr.get("rec") == "{'event': 'del', 'key': 'shape:s', 'type': 'empty', 'value': None}"


def test_record_without_the_value(rr):
    assert gears(rr, "python", SHAPE % ", readValue=False") == "OK"
    rr.set("shape:s", "v")
    assert rr.get("rec") == "{'event': 'set', 'key': 'shape:s'}"


def test_lua_and_rhai_records(rr):
    gears(rr, "lua", "GB():foreach(function(x) execute('SET', 'lua', x.key .. '/' .. x.event .. '/' "
                     ".. x.type .. '/' .. x.value) end):register('shape:*', {mode = 'sync'})")
    gears(rr, "rhai", 'GB().foreach(|x| execute("SET", "rhai", `${x.key}/${x.event}/${x.type}/${x.value}`))'
                      '.register("shape:*", #{mode: "sync"})')
    rr.set("shape:1", "v")
    assert rr.get("lua") == "shape:1/set/string/v"
    assert rr.get("rhai") == "shape:1/set/string/v"


def test_binary_keys_reach_the_registration_byte_for_byte(server, rr):
    # A key that is not UTF-8 arrives as bytes, a valid one as text.
    gears(rr, "python", "def seen(x):\n"
                        "    key = x['key'] if isinstance(x['key'], bytes) else x['key'].encode()\n"
                        "    execute('SET', b'seen:' + key, '1')\n"
                        "GB().foreach(seen).register(prefix='bin:*', mode='sync')")
    raw = server.new_client(decode_responses=False)
    raw.set(b"bin:\xff\xfe", "v")
    raw.set(b"bin:\xef\xbf\xbd", "v")
    assert sorted(raw.keys(b"seen:*")) == [b"seen:bin:\xef\xbf\xbd", b"seen:bin:\xff\xfe"]


def test_a_prefix_without_a_trailing_star_is_one_exact_key(rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'n')).register(prefix='exact', mode='sync')")
    rr.set("exactly", 1)
    rr.set("exact", 1)
    rr.set("exact*", 1)
    assert rr.get("n") == "1"


def test_glob_is_opt_in(rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'n')).register("
                        "prefix='user:*:profile', glob=True, mode='sync')")
    rr.set("user:1:profile", 1)
    rr.set("user:1:settings", 1)
    rr.set("user:2:profile", 1)
    assert rr.get("n") == "2"


def test_a_glob_pattern_is_bounded_and_matched_in_linear_time(rr):
    # At most 1 KiB: every event's key is matched against it.
    assert gears_error(rr, "python", "GB().register(prefix='L*' + 'a' * 1100 + 'b*', glob=True)") == str([
        "Traceback (most recent call last):\n", '  File "<string>", line 1, in <module>\n',
        "gears.error: a glob pattern may have at most 1024 bytes\n"])
    assert registrations(rr) == []
    # A part between stars of 1,000 bytes against a key of 2 MB: the backtracking matcher took
    # about 2 * 10^9 steps (seconds with the server waiting), on every event.
    gears(rr, "lua", "GB():foreach(function(x) execute('INCR', 'n') end):register("
                     "'L*' .. ('a'):rep(1000) .. 'b*', {glob = true, mode = 'sync'})")
    started = time.time()
    rr.set("L" + "a" * (2 << 20), "v")
    rr.set("L" + "a" * 1000 + "b", "v")
    assert time.time() - started < 1.0
    assert rr.get("n") == "1"


def test_event_types_are_case_insensitive_and_key_types_filter(rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'n')).register("
                        "prefix='e:*', eventTypes=['HSET', 'del'], keyTypes=['hash'], mode='sync')")
    rr.hset("e:1", "f", "v")   # hset on a hash: counted
    rr.set("e:2", "v")         # set: not an event type asked for
    rr.delete("e:2")           # del of a string (the key is gone: its type is empty)
    rr.hset("e:3", "f", "v")   # counted
    assert rr.get("n") == "2"


def test_keymiss_events(rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('SET', 'missed', x['key']))"
                        ".register(prefix='cache:*', eventTypes=['keymiss'], mode='sync')")
    assert rr.get("cache:1") is None
    assert rr.get("missed") == "cache:1"


@pytest.mark.parametrize("script, error", [
    ("GB().register(keyTypes=['tree'])", "unknown key type"),
    ("GB().register(mode='later')", "unknown execution mode"),
    ("GB().register(readValue=1)", "readValue value is not boolean"),
    ("GB('ShardsIDReader').register()", "Given reader do not support register or not exists"),
])
def test_register_argument_errors(rr, script, error):
    assert error in gears_error(rr, "python", script)
    assert registrations(rr) == []


def test_a_script_that_fails_registers_nothing(rr):
    assert "boom" in gears_error(rr, "python", "GB().register()\nGB().register('a*')\nraise Exception('boom')")
    assert registrations(rr) == []


def test_explain_registers_nothing(rr):
    rr.execute_command("RG.EXPLAIN", "python", "GB().register()\nGB().run()")
    assert registrations(rr) == []


def test_dumpregistrations_shape_and_stats(rr):
    gears(rr, "python", "GB(desc='counts').map(lambda x: 1 / int(x['value']))"
                        ".register(prefix='d:*', eventTypes=['set'], mode='sync')")
    rr.set("d:1", 1)
    rr.set("d:2", 0)
    [registration] = registrations(rr)
    rid = registration[1]
    assert rid.startswith(SHARD + "-")
    assert registration[:7] == ["id", rid, "reader", "KeysReader", "desc", "counts", "RegistrationData"]
    assert registration[8:] == ["PD", registration[9], "ExecutionThreadPool", "DefaultPool"]
    assert registration[9].startswith("{'sessionId':'%s-" % SHARD)
    stats = data(registration)
    assert list(stats) == ["mode", "numTriggered", "numSuccess", "numFailures", "numAborted",
                           "lastRunDurationMS", "totalRunDurationMS", "avgRunDurationMS",
                           "lastError", "args"]
    assert (stats["mode"], stats["numTriggered"], stats["numSuccess"], stats["numFailures"],
            stats["numAborted"]) == ("sync", 2, 1, 1, 0)
    assert "ZeroDivisionError" in stats["lastError"]
    float(stats["avgRunDurationMS"])
    assert stats["args"] == ["regex", "d:*", "eventTypes", ["set"], "keyTypes", None,
                             "hookCommands", None]
    assert rr.execute_command("RG.CLEARREGISTRATIONSSTATS") == "OK"
    stats = data(registrations(rr)[0])
    assert (stats["numTriggered"], stats["numFailures"], stats["lastError"]) == (0, 0, None)


def test_unregister(rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'n')).register(prefix='u:*', mode='sync')")
    rid = registrations(rr)[0][1]
    rr.set("u:1", 1)
    assert rr.execute_command("RG.UNREGISTER", rid) == "OK"
    rr.set("u:2", 1)
    assert rr.get("n") == "1"
    assert registrations(rr) == []
    assert raw_error(rr, "RG.UNREGISTER", rid) == "execution is not registered"
    assert raw_error(rr, "RG.UNREGISTER", "nope") == "execution is not registered"


def test_flushall_keeps_registrations(rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'n')).register(prefix='f:*', mode='sync')")
    rr.flushall()
    rr.set("f:1", 1)
    assert rr.get("n") == "1"


def test_pause_is_for_stream_registrations(rr):
    gears(rr, "python", "GB().register(prefix='p:*')")
    rid = registrations(rr)[0][1]
    assert raw_error(rr, "RG.PAUSEREGISTRATIONS", rid) == "Reader KeysReader does not support pause"
    assert raw_error(rr, "RG.UNPAUSEREGISTRATIONS", rid) == "Reader KeysReader does not support unpause"
    assert raw_error(rr, "RG.PAUSEREGISTRATIONS", "x") == \
        "Execution x does not exists on shard %s" % SHARD


def test_on_registered_runs_once_registered(rr):
    gears(rr, "python", "def init():\n    execute('SET', 'initialized', '1')\n"
                        "GB().register(prefix='o:*', onRegistered=init)")
    assert rr.get("initialized") == "1"
    gears(rr, "lua", "GB():register('o:*', {onRegistered = function() execute('SET', 'lua_init', '1') end})")
    assert rr.get("lua_init") == "1"


def test_a_sync_registration_is_not_run_again_by_its_own_writes(rr):
    # Its write matches its own prefix: it does not recurse.
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'loop:n')).register(prefix='loop:*', mode='sync')")
    rr.set("loop:a", 1)
    assert rr.get("loop:n") == "1"


def test_a_sync_registration_fires_for_writes_of_executions(rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'n')).register(prefix='w:*', mode='sync')")
    gears(rr, "lua", "execute('SET', 'w:1', '1') execute('SET', 'w:2', '2')")
    assert rr.get("n") == "2"


def test_events_in_other_databases_run_there(server, rr):
    gears(rr, "python", "GB().foreach(lambda x: execute('INCR', 'n')).register(prefix='db:*', mode='sync')")
    other = server.new_client(db=5, decode_responses=True)
    other.set("db:1", 1)
    assert other.get("n") == "1"
    assert rr.get("n") is None


def test_max_executions_per_registration(rr):
    rr.execute_command("RG.CONFIGSET", "MaxExecutionsPerRegistration", "3")
    try:
        gears(rr, "python", "GB().register(prefix='m:*', mode='sync')")
        for i in range(10):
            rr.set("m:%d" % i, i)
        assert len(rr.execute_command("RG.DUMPEXECUTIONS")) == 3
    finally:
        rr.execute_command("RG.CONFIGSET", "MaxExecutionsPerRegistration", "100")


def test_info_counts_registrations(rr):
    gears(rr, "python", "GB().register(prefix='i:*')\nGB().register(prefix='j:*')")
    assert rr.info("rg")["rg_registrations"] == 2


class TestAcl:
    @pytest.fixture
    def alice(self, server, rr):
        rr.execute_command("ACL", "SETUSER", "alice", "on", ">pw", "~user:*", "+@all")
        client = server.new_client(username="alice", password="pw", decode_responses=True)
        yield client
        rr.execute_command("ACL", "DELUSER", "alice")

    def test_a_registration_acts_as_its_user(self, rr, alice):
        # alice's registration copies every key it sees: it may write only user:*.
        assert gears(alice, "lua", "GB():foreach(function(x) execute('SET', 'user:copy:' .. x.key, '1') "
                                   "execute('SET', 'stolen', x.key) end):register({mode = 'sync'})") == "OK"
        rr.set("user:1", "v")
        # Its first write is allowed, the second one is refused.
        assert rr.get("user:copy:user:1") == "1"
        assert rr.get("stolen") is None
        [registration] = registrations(rr)
        assert "NOPERM" in data(registration)["lastError"]

    def test_events_on_keys_the_user_may_not_read_do_not_reach_it(self, rr, alice):
        gears(alice, "lua", "GB():foreach(function(x) execute('INCR', 'user:seen') end):register({mode = 'sync'})")
        rr.set("secret:1", "s")
        rr.set("user:2", "v")
        assert rr.get("user:seen") == "1"

    def test_other_users_do_not_see_or_remove_it(self, server, rr, alice):
        gears(alice, "lua", "GB():register('user:*')")
        rid = registrations(rr)[0][1]
        rr.execute_command("ACL", "SETUSER", "bob", "on", ">pw", "~*", "+@all", "-client")
        bob = server.new_client(username="bob", password="pw", decode_responses=True)
        try:
            assert registrations(bob) == []
            assert raw_error(bob, "RG.UNREGISTER", rid) == "execution is not registered"
            assert [r[1] for r in registrations(alice)] == [rid]
        finally:
            rr.execute_command("ACL", "DELUSER", "bob")


RUNAWAY_SYNC = {
    "python": "def f(x):\n    while True:\n        pass\nGB().foreach(f).register(prefix='loop:*', mode='sync')",
    "lua": "GB():foreach(function(x) while true do end end):register('loop:*', {mode = 'sync'})",
    "rhai": 'GB().foreach(|x| { loop {} }).register("loop:*", #{mode: "sync"})',
}


@pytest.fixture(scope="module")
def quick():
    from conftest import RedisServer
    s = RedisServer(extra_args=("AtomicBlockMaxTime", "300") + SYNC_WRITES)
    yield s
    s.stop()


@pytest.mark.parametrize("language", sorted(RUNAWAY_SYNC))
def test_a_runaway_sync_registration_is_stopped_like_an_atomic_block(quick, language):
    client = quick.new_client()
    gears(client, language, RUNAWAY_SYNC[language])
    started = time.time()
    client.set("loop:1", 1)   # the command waits for the registration, which is stopped
    elapsed = time.time() - started
    assert 0.25 < elapsed < 3.0
    assert client.ping()
    [registration] = registrations(client)
    assert data(registration)["lastError"].startswith(
        "BUSY the atomic block ran longer than 300 ms (AtomicBlockMaxTime)")
    client.execute_command("RG.UNREGISTER", registration[1])


@pytest.mark.parametrize("language", sorted(RUNAWAY_SYNC))
def test_the_sync_runs_of_one_command_share_the_atomic_limit(quick, language):
    """One MSET raises an event per key: the runs together hold the server about
    AtomicBlockMaxTime, not once per key (20 keys held it 6 s)."""
    client = quick.new_client()
    gears(client, language, RUNAWAY_SYNC[language])
    started = time.time()
    client.mset({"loop:%d" % i: i for i in range(20)})
    elapsed = time.time() - started
    assert 0.25 < elapsed < 1.5, elapsed
    [registration] = registrations(client)
    stats = data(registration)
    assert (stats["numTriggered"], stats["numSuccess"], stats["numFailures"]) == (20, 0, 20)
    assert stats["lastError"].startswith("BUSY sync runs held the server for 3")
    assert stats["lastError"].endswith(
        " ms without a break (AtomicBlockMaxTime is 300 ms): this one did not run")
    # The next command starts with the whole limit again.
    client.set("loop:x", 1)
    assert data(registrations(client)[0])["lastError"].startswith(
        "BUSY the atomic block ran longer than 300 ms (AtomicBlockMaxTime)")
    client.execute_command("RG.UNREGISTER", registration[1])


BEFORE = ("GB().foreach(lambda x: execute('SET', 'last', str(x)))"
          ".register(prefix='old:*', eventTypes=['before_delete', 'before_expire'], mode='%s')")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_before_removal_events_carry_the_old_value(server, rr, mode):
    if server.kind[0] != "valkey" and server.kind[1] < (7, 2, 0):
        assert gears_error(rr, "python", BEFORE % mode) == (
            "event type 'before_delete' needs a server with key events (Redis 7.2 or later, Valkey)")
        assert registrations(rr) == []
        return
    assert gears(rr, "python", BEFORE % mode) == "OK"
    rr.hset("old:1", mapping={"a": "1"})
    rr.delete("old:1")
    expected = "{'event': 'before_delete', 'key': 'old:1', 'type': 'hash', 'value': {'a': '1'}}"
    assert wait_for(lambda: rr.get("last") == expected), rr.get("last")
    rr.set("old:2", "v", px=50)
    expected = "{'event': 'before_expire', 'key': 'old:2', 'type': 'string', 'value': 'v'}"
    assert wait_for(lambda: rr.get("last") == expected or rr.exists("old:2") and False), rr.get("last")
    # Not asked for: no before_* event for other registrations.
    stats = data(registrations(rr)[0])
    assert stats["numTriggered"] == 2


def test_python_register_returns_the_registration_id(rr):
    gears(rr, "python", "rid = GB().register(prefix='r:*')\nexecute('SET', 'rid', rid)")
    assert [r[1] for r in registrations(rr)] == [rr.get("rid")]


def test_sync_writes_on_redis_7_0_need_the_setting():
    from conftest import RedisServer
    s = RedisServer()
    try:
        client = s.new_client()
        gears(client, "lua", SYNC_COUNTER["lua"])
        client.set("k:1", "v")
        name, version = s.kind
        if name == "redis" and version < (7, 2, 0):
            # Inside the notification a write could crash the server: refused, the event fails.
            assert client.get("count") is None
            [registration] = registrations(client)
            assert data(registration)["lastError"] == (
                "script:1: ERR a sync registration can not run 'incr' on this server: Redis 7.0 "
                "has no post-notification jobs, and a write inside the command that raised the "
                "event could crash it (use mode='async', Redis 7.2+ or Valkey, or "
                "SyncRegistrationWrites 1)")
            # Reads work.
            gears(client, "python", "GB().map(lambda x: execute('GET', x['key'])).register(prefix='r:*', mode='sync')")
            client.set("r:1", "v")
            assert data(registrations(client)[1])["numSuccess"] == 1
        else:
            assert client.get("count") == "1"
    finally:
        s.stop()


def test_many_registrations_each_event_reaches_only_its_own(rr):
    script = "\n".join("GB().foreach(lambda x: execute('INCR', 'hit:%d')).register(prefix='p%d:*', mode='sync')" % (i, i)
                       for i in range(150))
    script += "\nGB().foreach(lambda x: execute('INCR', 'hit:exact')).register(prefix='p7:exact', mode='sync')"
    script += "\nGB().foreach(lambda x: execute('INCR', 'hit:glob')).register(prefix='p?:*:g', glob=True, mode='sync')"
    gears(rr, "python", script)
    rr.set("p7:exact", 1)
    rr.set("p42:x", 1)
    rr.set("p3:y:g", 1)
    hits = {k: rr.get(k) for k in rr.keys("hit:*")}
    assert hits == {"hit:7": "1", "hit:exact": "1", "hit:42": "1", "hit:3": "1", "hit:glob": "1"}


def test_before_evict_carries_the_evicted_value(server, rr):
    if server.kind[0] != "valkey" and server.kind[1] < (7, 2, 0):
        pytest.skip("no key events before Redis 7.2 (the refusal is tested above)")
    # No writes (memory is full while keys are evicted): a run fails unless its record holds
    # the evicted value.
    gears(rr, "python", "def check(x):\n"
                        "    assert x['event'] == 'before_evict' and x['value'] == 'x' * 20000\n"
                        "GB().foreach(check).register(prefix='ev:*', eventTypes=['before_evict'], mode='async')")
    rr.config_set("maxmemory-policy", "allkeys-random")
    # Gears' own limit follows maxmemory unless set: keep it out of the way here.
    rr.execute_command("RG.CONFIGSET", "MemoryLimit", "1gb")
    used = rr.info("memory")["used_memory"]
    rr.config_set("maxmemory", used + 2 * 1024 * 1024)
    try:
        for i in range(400):
            rr.set("ev:%d" % i, "x" * 20000)
    finally:
        rr.config_set("maxmemory", 0)
        rr.config_set("maxmemory-policy", "noeviction")
        rr.execute_command("RG.CONFIGSET", "MemoryLimit", "0")
    evicted = rr.info("stats")["evicted_keys"]
    assert evicted > 0
    stats = lambda: data(registrations(rr)[0])
    assert wait_for(lambda: stats()["numTriggered"] == evicted)
    assert (stats()["numSuccess"], stats()["lastError"]) == (evicted, None)


def test_a_backlog_of_async_events_keeps_order_values_and_databases(server, rr):
    # Written in one pipeline, the events pile up: the worker reads them in batches.
    gears(rr, "lua", "GB():foreach(function(x) execute('RPUSH', 'seen', x.key .. '=' .. tostring(x.value)) end)"
                     ":register('bl:*')")
    pipe = rr.pipeline(transaction=False)
    for i in range(500):
        pipe.set("bl:%d" % i, "v%d" % i)
    pipe.execute()
    other = server.new_client(db=3)
    other.set("bl:other", "in3")
    assert wait_for(lambda: rr.llen("seen") == 500 and other.llen("seen") == 1)
    assert rr.lrange("seen", 0, -1) == ["bl:%d=v%d" % (i, i) for i in range(500)]
    assert other.lrange("seen", 0, -1) == ["bl:other=in3"]
    other.flushdb()


def test_lua_and_rhai_record_shapes_of_hashes_lists_and_no_value(rr):
    gears(rr, "lua", "GB():foreach(function(x) execute('SET', 'lua', x.event .. '/' .. x.type .. '/' .. "
                     "tostring(type(x.value) == 'table' and (x.value.a or x.value[1]) or x.value)) end)"
                     ":register('shape:*', {mode = 'sync'})")
    gears(rr, "rhai", 'GB().foreach(|x| { let v = if type_of(x.value) == "map" { x.value.a } '
                      'else if type_of(x.value) == "array" { x.value[0] } else { x.value }; '
                      'execute("SET", "rhai", `${x.event}/${x.type}/${v}`) }).register("shape:*", #{mode: "sync"})')
    gears(rr, "lua", "GB():foreach(function(x) execute('SET', 'lua_nv', x.key .. '/' .. x.event .. '/' .. "
                     "tostring(x.value) .. '/' .. tostring(x.type)) end):register('shape:*', {mode = 'sync', readValue = false})")
    rr.hset("shape:h", "a", "1")
    assert (rr.get("lua"), rr.get("rhai")) == ("hset/hash/1", "hset/hash/1")
    rr.rpush("shape:l", "x", "y")
    assert (rr.get("lua"), rr.get("rhai")) == ("rpush/list/x", "rpush/list/x")
    assert rr.get("lua_nv") == "shape:l/rpush/nil/nil"
