"""Sessions (ID, DESCRIPTION, UPGRADE, REPLACE_WITH), and registrations that survive DEBUG
RELOAD, restarts from RDB and AOF, and reach replicas."""
import time

import pytest
import redis

from conftest import RedisServer as BaseServer
from helpers import gears, gears_error, raw_error, wait_for

# The sync counters below write: on Redis 7.0 that needs the setting (test_registrations.py).
SYNC_WRITES = ("SyncRegistrationWrites", "1")


def RedisServer(extra_args=(), **kwargs):
    return BaseServer(extra_args=SYNC_WRITES + tuple(extra_args), **kwargs)


@pytest.fixture(scope="module")
def server():
    s = RedisServer()
    yield s
    s.stop()

COUNTER = {
    "python": "GB().foreach(lambda x: execute('INCR', '%s')).register(prefix='k:*', mode='sync')",
    "lua": "GB():foreach(function(x) execute('INCR', '%s') end):register('k:*', {mode = 'sync'})",
    "rhai": 'GB().foreach(|x| execute("INCR", "%s")).register("k:*", #{mode: "sync"})',
}


def counter(language, key=None):
    return COUNTER[language] % (key or language)


def session_ids(client):
    return [s[1] for s in client.execute_command("RG.PYDUMPSESSIONS")]


def registration_ids(client):
    return [r[1] for r in client.execute_command("RG.DUMPREGISTRATIONS")]


@pytest.fixture
def rr(server):
    client = server.new_client()
    client.flushall()
    yield client
    for rid in registration_ids(client):
        client.execute_command("RG.UNREGISTER", rid)


class TestSessions:
    def test_an_id_names_the_session_and_can_not_be_taken_twice(self, rr):
        assert gears(rr, "python", counter("python"), "ID", "counts", "DESCRIPTION", "d") == "OK"
        [registration] = rr.execute_command("RG.DUMPREGISTRATIONS")
        assert registration[9] == "{'sessionId':'counts', 'depsList':[]}"
        assert gears_error(rr, "python", counter("python"), "ID", "counts") == \
            "Session counts already exists"
        assert len(registration_ids(rr)) == 1

    @pytest.mark.parametrize("language", sorted(COUNTER))
    def test_upgrade_replaces_the_sessions_registrations(self, rr, language):
        gears(rr, language, counter(language, "old"), "ID", "s1")
        gears(rr, language, counter(language, "other"), "ID", "s2")
        before = registration_ids(rr)
        assert gears(rr, language, counter(language, "new"), "ID", "s1", "UPGRADE") == "OK"
        after = registration_ids(rr)
        assert len(after) == 2 and before[1] in after and before[0] not in after
        rr.set("k:1", 1)
        assert (rr.get("old"), rr.get("new"), rr.get("other")) == (None, "1", "1")

    def test_a_failing_upgrade_keeps_the_old_session(self, rr):
        gears(rr, "python", counter("python", "old"), "ID", "s1")
        before = registration_ids(rr)
        error = gears_error(rr, "python", counter("python", "new") + "\nraise Exception('no')",
                            "ID", "s1", "UPGRADE")
        assert "Exception: no" in error
        failing_on_registered = ("def boom():\n    raise Exception('init failed')\n"
                                 "GB().register(prefix='k:*', onRegistered=boom)")
        assert "init failed" in gears_error(rr, "python", failing_on_registered, "ID", "s1", "UPGRADE")
        assert registration_ids(rr) == before
        rr.set("k:1", 1)
        assert rr.get("old") == "1"

    def test_replace_with(self, rr):
        gears(rr, "python", counter("python", "old"), "ID", "v1")
        assert gears(rr, "python", counter("python", "new"), "ID", "v2", "REPLACE_WITH", "v1") == "OK"
        rr.set("k:1", 1)
        assert (rr.get("old"), rr.get("new")) == (None, "1")
        assert gears_error(rr, "python", counter("python"), "ID", "v3", "REPLACE_WITH", "nope") == \
            "Can not replace with nope, session does not exists."
        gears(rr, "python", counter("python", "x"), "ID", "v4")
        assert gears_error(rr, "python", counter("python"), "ID", "v4", "REPLACE_WITH", "v2") == \
            "Can not replace an existing session v4 with v2"

    @pytest.mark.parametrize("options, error", [
        (("ID",), "ID is missing"),
        (("ID", "a b"), "ID must be compose of: ['A'-'Z' | 'a'-'z' | '0' - '9' | '-' | '_']"),
        (("DESCRIPTION",), "DESCRIPTION is missing"),
        (("REPLACE_WITH",), "REPLACE_WITH is missing"),
        (("BOGUS",), "Unknown arguments were given: BOGUS"),
    ])
    def test_option_errors(self, rr, options, error):
        assert gears_error(rr, "python", counter("python"), *options) == error

    def test_another_users_session_is_not_theirs_to_upgrade(self, server, rr):
        gears(rr, "lua", counter("lua", "admin"), "ID", "mine")
        rr.execute_command("ACL", "SETUSER", "eve", "on", ">pw", "~*", "+@all", "-client")
        eve = server.new_client(username="eve", password="pw")
        try:
            assert gears_error(eve, "lua", counter("lua", "eve"), "ID", "mine", "UPGRADE") == \
                "Session mine already exists"
        finally:
            rr.execute_command("ACL", "DELUSER", "eve")

    def test_unregistering_the_last_registration_ends_the_session(self, rr):
        gears(rr, "python", counter("python"), "ID", "gone")
        [rid] = registration_ids(rr)
        rr.execute_command("RG.UNREGISTER", rid)
        # The id is free again.
        assert gears(rr, "python", counter("python"), "ID", "gone") == "OK"

    def test_pydumpsessions(self, rr):
        gears(rr, "python", counter("python"), "ID", "test", "DESCRIPTION", "desc")
        gears(rr, "lua", counter("lua"), "ID", "luasession")
        [rid, lua_rid] = registration_ids(rr)
        assert rr.execute_command("RG.PYDUMPSESSIONS") == [[
            "ID", "test", "sessionDescription", "desc", "refCount", 1, "linked", "primary",
            "dead", "false", "requirementInstallationNeeded", 0, "requirements", [],
            "registrations", [rid]]]
        verbose = rr.execute_command("RG.PYDUMPSESSIONS", "VERBOSE")
        assert verbose[0][-1][0][:4] == ["id", rid, "reader", "KeysReader"]
        assert rr.execute_command("RG.PYDUMPSESSIONS", "SESSIONS", "test", "nope") == [
            rr.execute_command("RG.PYDUMPSESSIONS")[0], "Session nope does not exists"]
        assert raw_error(rr, "RG.PYDUMPSESSIONS", "LOUD") == "Unknown option LOUD"
        everything = rr.execute_command("RG.DUMPSESSIONS")
        assert [s[1] for s in everything] == ["test", "luasession"]
        assert everything[1][-4:] == ["registrations", [lua_rid], "language", "lua"]

    def test_inner_session_is_refused_to_clients(self, rr):
        assert raw_error(rr, "RG.INNERSESSION", "DEL", "x") == \
            "ERR RG.INNERSESSION is internal to Gears (replication and AOF)"


def make_sessions(client):
    """One session per language, a top-level write, a second registration unregistered."""
    gears(client, "python", "execute('INCR', 'top')\n" + counter("python"), "ID", "py")
    gears(client, "lua", counter("lua") + " GB():register('other:*')", "ID", "lua")
    gears(client, "rhai", counter("rhai"))
    ids = registration_ids(client)
    assert len(ids) == 4
    client.execute_command("RG.UNREGISTER", ids[2])  # lua's other:* registration
    return registration_ids(client)


def check_sessions(client, ids, fired):
    assert registration_ids(client) == ids
    client.set("k:%d" % fired, 1)
    assert (client.get("python"), client.get("lua"), client.get("rhai")) == (str(fired),) * 3
    # The top-level write ran once, not again when the session was made again.
    assert client.get("top") == "1"


def test_debug_reload_keeps_registrations():
    s = RedisServer()
    try:
        c = s.new_client()
        ids = make_sessions(c)
        check_sessions(c, ids, 1)
        assert c.execute_command("DEBUG", "RELOAD") == "OK"
        check_sessions(c, ids, 2)
    finally:
        s.stop()


def test_a_restart_from_rdb_makes_them_again():
    s = RedisServer()
    try:
        c = s.new_client()
        ids = make_sessions(c)
        check_sessions(c, ids, 1)
        c.save()
        s.stop(keep_dir=True)
        s = RedisServer(dir=s.dir)
        c = s.new_client()
        check_sessions(c, ids, 2)
        # New ids never collide with the old ones.
        gears(c, "python", "GB().register(prefix='new:*')")
        assert len(set(registration_ids(c))) == 4
    finally:
        s.stop()


@pytest.mark.parametrize("rewrite", [False, True])
def test_a_restart_from_aof_makes_them_again(rewrite):
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    s = RedisServer(server_args=aof)
    try:
        c = s.new_client()
        ids = make_sessions(c)
        check_sessions(c, ids, 1)
        if rewrite:
            c.bgrewriteaof()
            assert wait_for(lambda: c.info("persistence")["aof_rewrite_in_progress"] == 0)
        s.stop(keep_dir=True)
        s = RedisServer(server_args=aof, dir=s.dir)
        c = s.new_client()
        check_sessions(c, ids, 2)
    finally:
        s.stop()


def test_registrations_reach_a_replica_and_fire_once_it_is_promoted():
    master = RedisServer(server_args=("--repl-diskless-sync-delay", "0"))
    replica = None
    try:
        m = master.new_client()
        gears(m, "python", counter("python"), "ID", "before")
        replica = RedisServer(server_args=("--replicaof", "127.0.0.1", str(master.port)))
        r = replica.new_client()
        assert wait_for(lambda: r.info("replication").get("master_link_status") == "up")
        # Full sync: the sessions come with the data.
        assert wait_for(lambda: registration_ids(r) == registration_ids(m))
        # Made later: they follow.
        gears(m, "lua", counter("lua"), "ID", "after")
        gears(m, "rhai", counter("rhai"))
        assert wait_for(lambda: registration_ids(r) == registration_ids(m))
        assert len(registration_ids(r)) == 3
        # Only the master fires; the replica gets the writes.
        m.set("k:1", 1)
        assert wait_for(lambda: r.get("rhai") == "1")
        assert (r.get("python"), r.get("lua")) == ("1", "1")
        # A session replaced under a new id (REPLACE_WITH) is gone there too.
        kept = registration_ids(m)
        gears(m, "python", "GB().register('rw:*')", "ID", "rw1")
        gears(m, "python", "GB().register('rw2:*')", "ID", "rw2", "REPLACE_WITH", "rw1")
        assert wait_for(lambda: session_ids(r) == session_ids(m))
        assert session_ids(r) == ["before", "rw2"]  # the Python sessions
        [added] = [i for i in registration_ids(m) if i not in kept]
        m.execute_command("RG.UNREGISTER", added)
        assert wait_for(lambda: registration_ids(r) == registration_ids(m) == kept)
        # Unregistering reaches it too.
        m.execute_command("RG.UNREGISTER", registration_ids(m)[0])
        assert wait_for(lambda: registration_ids(r) == registration_ids(m))
        assert len(registration_ids(r)) == 2
        # Promoted, it fires for new writes without registering again.
        m.set("k:2", 1)
        assert wait_for(lambda: r.get("rhai") == "2")
        r.execute_command("REPLICAOF", "NO", "ONE")
        r.set("k:3", 1)
        assert (r.get("python"), r.get("lua"), r.get("rhai")) == ("1", "3", "3")
    finally:
        if replica:
            replica.stop()
        master.stop()


def test_unregister_waits_for_a_write_pause_and_the_server_survives():
    # RG.UNREGISTER propagates: during CLIENT PAUSE WRITE it waits (it crashed the server).
    s = RedisServer(server_args=("--appendonly", "yes"))
    try:
        c = s.new_client()
        gears(c, "lua", counter("lua"), "ID", "p")
        [rid] = registration_ids(c)
        c.execute_command("CLIENT", "PAUSE", 300, "WRITE")
        started = time.time()
        assert c.execute_command("RG.UNREGISTER", rid) == "OK"
        assert time.time() - started > 0.2
        # A script that registers while a pause starts waits for it too.
        slow = "local t = execute('TIME') while tonumber(execute('TIME')[1]) < tonumber(t[1]) + 1 do end " + counter("lua")
        import threading
        result = []
        t = threading.Thread(target=lambda: result.append(gears(s.new_client(), "lua", slow)))
        t.start()
        time.sleep(0.3)
        c.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        t.join(10)
        assert result == ["OK"]
        assert s.alive() and c.ping()
        assert len(registration_ids(c)) == 1
    finally:
        s.stop()


def test_a_read_only_replica_refuses_registrations():
    master = RedisServer(server_args=("--repl-diskless-sync-delay", "0"))
    replica = RedisServer(server_args=("--replicaof", "127.0.0.1", str(master.port)))
    try:
        m, r = master.new_client(), replica.new_client()
        gears(m, "lua", counter("lua"), "ID", "m")
        assert wait_for(lambda: registration_ids(r) == registration_ids(m) != [])
        assert gears_error(r, "lua", counter("lua"), "ID", "r") == \
            "READONLY You can't write against a read only replica."
        assert raw_error(r, "RG.UNREGISTER", registration_ids(r)[0]).startswith("READONLY")
        assert registration_ids(r) == registration_ids(m)
    finally:
        replica.stop()
        master.stop()


def test_max_registrations(rr):
    rr.execute_command("RG.CONFIGSET", "MaxRegistrations", "2")
    try:
        gears(rr, "python", "GB().register(prefix='a:*')\nGB().register(prefix='b:*')")
        assert gears_error(rr, "python", "GB().register(prefix='c:*')") == \
            "the registration limit is reached (2 registrations, MaxRegistrations)"
        assert len(registration_ids(rr)) == 2
    finally:
        rr.execute_command("RG.CONFIGSET", "MaxRegistrations", "1000")


def test_a_user_can_not_take_the_registrations_kept_for_administrators(rr):
    rr.execute_command("RG.CONFIGSET", "MaxRegistrations", "20")
    rr.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~L*", "+@all", "-@dangerous")
    try:
        app = redis.Redis(port=rr.connection_pool.connection_kwargs["port"], username="app",
                          password="pw", decode_responses=True)
        script = "for i = 1, 19 do GB():register('L' .. i .. ':*') end"
        assert gears_error(app, "lua", script) == (
            "the registration limit is reached (20 registrations, MaxRegistrations; the last 2 "
            "are kept for users who may run CLIENT KILL)")
        gears(app, "lua", script.replace("19", "18"))
        assert len(registration_ids(rr)) == 18
        # The default user may run CLIENT KILL: it gets the last two.
        gears(rr, "python", "GB().register(prefix='a:*')\nGB().register(prefix='b:*')")
        assert gears_error(rr, "python", "GB().register(prefix='c:*')") == \
            "the registration limit is reached (20 registrations, MaxRegistrations)"
    finally:
        for registration in registration_ids(rr):
            rr.execute_command("RG.UNREGISTER", registration)
        rr.execute_command("ACL", "DELUSER", "app")
        rr.execute_command("RG.CONFIGSET", "MaxRegistrations", "1000")


def test_a_session_that_can_not_be_made_again_is_kept_dead():
    s = RedisServer(extra_args=("AtomicBlockMaxTime", "300"))
    try:
        c = s.new_client()
        # Its top level loops once the flag is set: on restart it is stopped, kept as dead.
        gears(c, "lua", "if execute('GET', 'flag') then while true do end end " + counter("lua"), "ID", "trap")
        c.set("flag", "1")
        c.save()
        s.stop(keep_dir=True)
        s = RedisServer(extra_args=("AtomicBlockMaxTime", "300"), dir=s.dir)
        c = s.new_client()
        assert registration_ids(c) == []
        assert c.execute_command("RG.DUMPSESSIONS") == []
        [dead] = c.execute_command("RG.DUMPSESSIONS", "DEAD")
        assert dead[:2] == ["ID", "trap"] and dead[9] == "true" and dead[15] == []
        assert "could not be made again: BUSY" in s.read_log()
        # Saved again, and an UPGRADE replaces it.
        c.save()
        assert gears(c, "lua", counter("lua"), "ID", "trap", "UPGRADE") == "OK"
        assert c.execute_command("RG.DUMPSESSIONS", "DEAD")[0][9] == "false"
        assert len(registration_ids(c)) == 1
    finally:
        s.stop()


def test_on_registered_runs_again_when_the_session_is_made_again():
    s = RedisServer()
    try:
        c = s.new_client()
        script = ("state = {'conn': None}\n"
                  "def init():\n    state['conn'] = 'connected'\n"
                  "GB().foreach(lambda x: execute('SET', 'seen', str(state['conn'])))"
                  ".register(prefix='o:*', onRegistered=init, mode='sync')")
        gears(c, "python", script, "ID", "conn")
        c.set("o:1", 1)
        assert c.get("seen") == "connected"
        c.delete("seen")
        c.save()
        s.stop(keep_dir=True)
        s = RedisServer(dir=s.dir)
        c = s.new_client()
        c.set("o:2", 1)
        # The module-level state was rebuilt by the top level, and init ran again.
        assert c.get("seen") == "connected"
    finally:
        s.stop()


def test_triggers_and_hooks_are_made_again_after_a_restart():
    s = RedisServer()
    try:
        c = s.new_client()
        gears(c, "python", "GB('CommandReader').map(lambda x: len(x)).register(trigger='count', mode='sync')\n"
                           "GB('CommandReader').map(lambda x: call_next(x[1], x[2].upper()))"
                           ".register(hook='set', keyprefix='up:', mode='sync', convertToStr=False)",
              "ID", "cmds")
        assert c.execute_command("RG.TRIGGER", "count", "a", "b") == ["3"]
        c.set("up:1", "abc")
        assert c.get("up:1") == "ABC"
        c.save()
        s.stop(keep_dir=True)
        s = RedisServer(dir=s.dir)
        c = s.new_client()
        assert c.execute_command("RG.TRIGGER", "count", "a") == ["2"]
        c.set("up:2", "xyz")
        assert c.get("up:2") == "XYZ"
        # Made again, the trigger name is still taken once.
        assert gears_error(c, "python", "GB('CommandReader').register(trigger='count')") == \
            "trigger already registered"
    finally:
        s.stop()
