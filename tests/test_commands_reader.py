"""CommandReader registrations: triggers (RG.TRIGGER, RG.TRIGGERONKEY) and command hooks
(hook=, call_next), in Python, Lua and Rhai; override_reply and the read-through cache
(keymiss + commands=['get']); errors, RG.DUMPREGISTRATIONS, unregistering, ACL."""
import threading
import time

import pytest

from helpers import gears, gears_error, raw_error, raw_reply, registrations, wait_for

NOT_SYNC = "ERR can not run a non-sync execution inside a MULTI/LUA (blocking is not allowed) or on loading."


@pytest.fixture(scope="module")
def server():
    """Sync registrations here write inside keyspace notifications (the read-through cache): on
    Redis 7.0 that needs SyncRegistrationWrites 1 (see test_registrations.py)."""
    from conftest import serve
    yield from serve("SyncRegistrationWrites", "1")


# A trigger that replies its record, per language and mode.
ECHO = {
    "python": "GB('CommandReader').map(lambda x: x).register(trigger='echo', mode='%s')",
    "lua": "GB('CommandReader'):map(function(x) return x end):register({trigger = 'echo', mode = '%s'})",
    "rhai": 'GB("CommandReader").map(|x| x).register(#{trigger: "echo", mode: "%s"})',
}


@pytest.mark.parametrize("mode", ["sync", "async", "async_local"])
@pytest.mark.parametrize("language", sorted(ECHO))
def test_a_trigger_replies_its_results(rr, language, mode):
    assert gears(rr, language, ECHO[language] % mode) == "OK"
    assert rr.execute_command("RG.TRIGGER", "echo", "a", "b") == ["['echo', 'a', 'b']"]
    assert rr.execute_command("RG.TRIGGER", "echo") == ["['echo']"]
    # The key of RG.TRIGGERONKEY is the record's second element.
    assert rr.execute_command("RG.TRIGGERONKEY", "echo", "k", "x") == ["['echo', 'k', 'x']"]
    runs = [r for r in registrations(rr) if r[3] == "CommandReader"]
    stats = dict(zip(runs[0][7][0::2], runs[0][7][1::2]))
    assert (stats["mode"], stats["numTriggered"], stats["numSuccess"]) == (mode, 3, 3)


def test_a_trigger_writes_in_the_callers_database(server, rr):
    gears(rr, "python", "GB('CommandReader').foreach(lambda x: execute('SET', x[1], x[2]))"
                        ".map(lambda x: 'done').register(trigger='put', mode='sync')")
    db3 = server.new_client(db=3)
    assert db3.execute_command("RG.TRIGGER", "put", "k", "v") == ["done"]
    assert db3.get("k") == "v" and rr.get("k") is None


def test_a_trigger_replies_its_first_error(rr):
    gears(rr, "lua", "GB('CommandReader'):map(function(x) error('boom') end)"
                     ":register({trigger = 'fail', mode = 'sync'})")
    assert "boom" in raw_error(rr, "RG.TRIGGER", "fail")
    gears(rr, "python", "GB('CommandReader').map(lambda x: flat_error('ERR nope')).register(trigger='flat')")
    # flat_error raises an error of exactly its text (no traceback), as RedisGears 1.2.
    assert raw_error(rr, "RG.TRIGGER", "flat") == "ERR nope"


def test_trigger_errors(rr):
    assert raw_error(rr, "RG.TRIGGER", "missing") == "ERR subcommand not found"
    assert raw_error(rr, "RG.TRIGGER").startswith("ERR wrong number of arguments")
    assert raw_error(rr, "RG.TRIGGERONKEY", "t").startswith("ERR wrong number of arguments")
    assert "no trigger or hook argument was given" in gears_error(rr, "python", "GB('CommandReader').register('x')")
    assert "no trigger or hook argument was given" in gears_error(rr, "lua", "GB('CommandReader'):register()")
    assert "no trigger or hook argument was given" in gears_error(rr, "rhai", 'GB("CommandReader").register()')
    assert "trigger argument can not be given with keyprefix or hook" in gears_error(
        rr, "python", "GB('CommandReader').register(trigger='t', hook='set')")
    assert "trigger argument can not be given with keyprefix or hook" in gears_error(
        rr, "python", "GB('CommandReader').register(trigger='t', keyprefix='k')")
    assert gears(rr, "python", "GB('CommandReader').register(trigger='t')") == "OK"
    assert gears_error(rr, "python", "GB('CommandReader').register(trigger='t')") == "trigger already registered"
    assert gears_error(rr, "lua", "GB('CommandReader'):register({trigger = 'u'})\n"
                                  "GB('CommandReader'):register({trigger = 'u'})") == \
        "trigger already registered in this session"
    # A script whose registrations fail registers none.
    assert raw_error(rr, "RG.TRIGGER", "u") == "ERR subcommand not found"
    assert "Given reader do not support run or not exists" in gears_error(
        rr, "python", "GB('CommandReader').run()")


def test_a_non_sync_trigger_can_not_run_inside_multi(server, rr):
    gears(rr, "python", "GB('CommandReader').map(lambda x: 1).register(trigger='slow')")
    gears(rr, "python", "GB('CommandReader').map(lambda x: 'fast').register(trigger='fast', mode='sync')")
    pipe = rr.pipeline(transaction=True)
    pipe.execute_command("RG.TRIGGER", "fast")
    pipe.execute_command("RG.TRIGGER", "slow")
    fast, slow = pipe.execute(raise_on_error=False)
    assert fast == ["fast"]
    assert str(slow) == NOT_SYNC[4:]
    assert rr.eval("return redis.pcall('RG.TRIGGER', 'slow')['err']", 0) == NOT_SYNC


def test_async_triggers_run_concurrently_and_block_only_their_client(server, rr):
    gears(rr, "python", "import time\nGB('CommandReader').map(lambda x: time.sleep(0.3) or 'slept')"
                        ".register(trigger='sleep')")
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(
        server.new_client().execute_command("RG.TRIGGER", "sleep"))) for _ in range(2)]
    start = time.time()
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert rr.ping()
    for t in threads:
        t.join()
    assert replies == [["slept"], ["slept"]]
    assert time.time() - start < 0.55


def test_binary_arguments_stay_bytes(server, rr):
    gears(rr, "python", "GB('CommandReader').map(lambda x: [type(a).__name__ for a in x] + [x[1]])"
                        ".register(trigger='bin', mode='sync', convertToStr=False)")
    gears(rr, "lua", "GB('CommandReader'):map(function(x) return {#x[2], x[2]} end)"
                     ":register({trigger = 'binlua', mode = 'sync', convertToStr = false})")
    gears(rr, "rhai", 'GB("CommandReader").map(|x| [type_of(x[1]), x[1]])'
                      '.register(#{trigger: "binrhai", mode: "sync", convertToStr: false})')
    raw = server.new_client(decode_responses=False)
    assert raw.execute_command("RG.TRIGGER", "bin", b"\xff\x00") == [[b"str", b"bytes", b"\xff\x00"]]
    assert raw.execute_command("RG.TRIGGER", "binlua", b"\xff\x00") == [[2, b"\xff\x00"]]
    assert raw.execute_command("RG.TRIGGER", "binrhai", b"\xff\x00") == [[b"blob", b"\xff\x00"]]


def test_dumpregistrations_shows_command_readers(rr):
    gears(rr, "python", "GB('CommandReader').register(trigger='t', inorder=True, mode='sync')\n"
                        "GB('CommandReader').register(hook='hset', keyprefix='user:', mode='sync')")
    (t, h) = registrations(rr)
    assert (t[3], h[3]) == ("CommandReader", "CommandReader")
    assert t[7][-2:] == ["args", ["trigger", "t", "inorder", 1]]
    assert h[7][-2:] == ["args", ["hook", "hset", "keyprefix", "user:", "inorder", 0]]
    assert raw_error(rr, "RG.PAUSEREGISTRATIONS", t[1]) == "Reader CommandReader does not support pause"


class TestAcl:
    @pytest.fixture
    def alice(self, server, rr):
        rr.execute_command("ACL", "SETUSER", "alice", "on", ">pw", "~user:*", "+@all")
        client = server.new_client(username="alice", password="pw", decode_responses=True)
        yield client
        rr.execute_command("ACL", "DELUSER", "alice")

    @pytest.mark.parametrize("language", ["lua", "python"])
    def test_a_trigger_acts_as_the_user_who_registered_it(self, rr, alice, language):
        script = {
            "lua": "GB('CommandReader'):foreach(function(x) execute('SET', x[2], '1') end)"
                   ":register({trigger = 'put', mode = 'sync'})",
            "python": "GB('CommandReader').foreach(lambda x: execute('SET', x[1], '1'))"
                      ".register(trigger='put', mode='sync')",
        }[language]
        assert gears(alice, language, script) == "OK"
        # The admin triggers it; the run still acts as alice.
        assert rr.execute_command("RG.TRIGGER", "put", "user:1") == ["['put', 'user:1']"]
        assert rr.get("user:1") == "1"
        assert "NOPERM" in raw_error(rr, "RG.TRIGGER", "put", "secret")
        assert rr.get("secret") is None

    def test_a_hooked_command_still_checks_its_caller(self, server, rr, alice):
        gears(rr, "python", "GB('CommandReader').map(lambda x: call_next(*x[1:]))"
                            ".register(hook='set', mode='sync', convertToStr=False)")
        assert raw_error(alice, "SET", "secret", "v") == \
            "NOPERM this user has no permissions to access one of the keys used as arguments"
        assert rr.get("secret") is None
        assert alice.set("user:2", "v") and rr.get("user:2") == "v"


# Hooks in every language: the hook stores the command's arguments, then runs the real command.
HOOK = {
    "python": "def h(x):\n    execute('RPUSH', 'seen', x[0])\n    return call_next(*x[1:])\n"
              "GB('CommandReader').map(h).register(hook='hset', mode='sync', convertToStr=False)",
    "lua": "GB('CommandReader'):map(function(x) execute('RPUSH', 'seen', x[1]) "
           "return call_next(table.unpack(x, 2)) end)"
           ":register({hook = 'hset', mode = 'sync', convertToStr = false})",
    "rhai": 'GB("CommandReader").map(|x| { execute("RPUSH", "seen", x[0]); x.remove(0); call_next(x) })'
            '.register(#{hook: "hset", mode: "sync", convertToStr: false})',
}


@pytest.mark.parametrize("language", sorted(HOOK))
def test_a_hook_runs_instead_of_the_command(rr, language):
    assert gears(rr, language, HOOK[language]) == "OK"
    assert rr.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert rr.hgetall("h") == {"a": "1", "b": "2"}
    # The record is the command as the client sent it (redis-py sends upper case).
    assert rr.lrange("seen", 0, -1) == ["HSET"]


def test_nested_hooks_run_newest_first_and_unregister_restores(rr):
    gears(rr, "python", "def h(x):\n    execute('RPUSH', 'order', 'old')\n    return call_next(*x[1:])\n"
                        "GB('CommandReader').map(h).register(hook='hset', mode='sync', convertToStr=False)")
    gears(rr, "lua", "GB('CommandReader'):map(function(x) execute('RPUSH', 'order', 'new') "
                     "return call_next(x[2], 'by', 'lua', table.unpack(x, 3)) end)"
                     ":register({hook = 'hset', mode = 'sync', convertToStr = false})")
    assert rr.hset("h", "f", "v") == 2
    assert rr.lrange("order", 0, -1) == ["new", "old"]
    assert rr.hgetall("h") == {"by": "lua", "f": "v"}
    old, new = registrations(rr)
    rr.execute_command("RG.UNREGISTER", new[1])
    rr.delete("order")
    assert rr.hset("h2", "f", "v") == 1
    assert rr.lrange("order", 0, -1) == ["old"]
    rr.execute_command("RG.UNREGISTER", old[1])
    assert rr.hset("h3", "f", "v") == 1
    assert rr.exists("order") == 1 and rr.llen("order") == 1


def test_a_hook_by_key_prefix(rr):
    gears(rr, "python", "GB('CommandReader').map(lambda x: 'hooked').register("
                        "hook='set', keyprefix='user:', mode='sync')")
    assert raw_reply(rr, "SET", "user:1", "v") == "hooked"
    assert rr.get("user:1") is None
    assert rr.set("other", "v") is True and rr.get("other") == "v"


def test_execute_of_the_hooked_command_inside_the_hook_does_not_loop(rr):
    # The hook's own SET goes to the real command (a hook never re-enters itself).
    gears(rr, "python", "def h(x):\n    execute('SET', x[1], x[2].upper())\n    return 'OK'\n"
                        "GB('CommandReader').map(h).register(hook='set', mode='sync')")
    rr.set("k", "v")
    assert rr.get("k") == "V"


def test_an_async_hook_blocks_its_client(rr):
    gears(rr, "python", "GB('CommandReader').map(lambda x: call_next(*x[1:]))"
                        ".register(hook='incr', mode='async_local', convertToStr=False)")
    assert rr.incr("n") == 1 and rr.incr("n") == 2
    assert rr.eval("return redis.pcall('INCR', 'n')['err']", 0) == NOT_SYNC


def test_hook_errors(rr):
    assert gears_error(rr, "python", "GB('CommandReader').register(hook='nosuch')") == \
        "Can not override an unexisting command"
    assert gears_error(rr, "python", "GB('CommandReader').register(hook='multi')") == \
        "Can not override a command which are not allowed inside a script"
    assert gears_error(rr, "python", "GB('CommandReader').register(hook='xread', keyprefix='x')") == \
        "Can not override a command with moveable keys by key prefix"
    gears(rr, "python", "GB('CommandReader').flatmap(lambda x: x).register(hook='hset')")
    assert gears_error(rr, "python", "GB('CommandReader').register(hook='hset', mode='sync')") == \
        "Can not override a none sync registration"
    gears(rr, "python", "GB('CommandReader').flatmap(lambda x: x).register(hook='lpush', mode='sync')")
    assert raw_error(rr, "LPUSH", "l", "a") == "Command hook must return exactly one result"
    assert raw_error(rr, "HSET", "h", "a", "b") == "Command hook must return exactly one result"
    # Outside a hook.
    assert "Can not get CommandHook ctx" in gears_error(rr, "python", "call_next('x')")
    assert "Can not get CommandHook ctx" in gears_error(rr, "lua", "call_next('x')")
    assert "Can not get CommandHook ctx" in gears_error(rr, "rhai", 'call_next("x")')
    result = gears(rr, "python", "GB('ShardsIDReader').map(lambda x: override_reply(1)).run()")
    assert "Can not get CommandHook ctx" in result[1][0]


# The read-through cache: a miss on GET fetches the value, stores it and answers with it.
CACHE = {
    "python": "def fetch(x):\n    v = 'fetched:' + x['key']\n    execute('SET', x['key'], v)\n"
              "    override_reply(v)\n"
              "GB().foreach(fetch).register(prefix='cache:*', eventTypes=['keymiss'], "
              "commands=['get'], mode='%s')",
    "lua": "GB():foreach(function(x) local v = 'fetched:' .. x.key execute('SET', x.key, v) "
           "override_reply(v) end):register('cache:*', {eventTypes = {'keymiss'}, "
           "commands = {'get'}, mode = '%s'})",
    "rhai": 'GB().foreach(|x| { let v = "fetched:" + x.key; execute("SET", x.key, v); '
            'override_reply(v); }).register("cache:*", #{eventTypes: ["keymiss"], '
            'commands: ["get"], mode: "%s"})',
}


@pytest.mark.parametrize("mode", ["sync", "async", "async_local"])
@pytest.mark.parametrize("language", sorted(CACHE))
def test_read_through_cache(rr, language, mode):
    assert gears(rr, language, CACHE[language] % mode) == "OK"
    assert rr.get("cache:1") == "fetched:cache:1"
    assert rr.get("cache:1") == "fetched:cache:1"
    assert rr.get("other") is None


def test_override_reply_once_and_get_command(rr):
    gears(rr, "python", "def f(x):\n    override_reply(' '.join(get_command()))\n"
                        "    override_reply('again')\n"
                        "GB().foreach(f).register(prefix='*', eventTypes=['keymiss'], commands=['get'], "
                        "mode='sync')")
    assert rr.get("nothing") == "GET nothing"
    [registration] = registrations(rr)
    stats = dict(zip(registration[7][0::2], registration[7][1::2]))
    assert "Can only override reply once" in stats["lastError"]


RECURSIVE_TRIGGER = {
    "python": "GB('CommandReader').foreach(lambda x: execute('RG.TRIGGER', 'rec')).register(trigger='rec', mode='sync')",
    "lua": "GB('CommandReader'):foreach(function(x) execute('RG.TRIGGER', 'rec') end):register({trigger = 'rec', mode = 'sync'})",
    "rhai": 'GB("CommandReader").foreach(|x| execute("RG.TRIGGER", "rec")).register(#{trigger: "rec", mode: "sync"})',
}


@pytest.mark.parametrize("language", sorted(RECURSIVE_TRIGGER))
def test_a_sync_trigger_that_triggers_itself_does_not_freeze_the_server(rr, language):
    gears(rr, language, RECURSIVE_TRIGGER[language])
    started = time.time()
    error = raw_error(rr, "RG.TRIGGER", "rec")
    assert time.time() - started < 2
    expected = ("registrations nested deeper than 8" if language == "python" else
                "a registration can not run inside a run of its own script")
    assert expected in error
    assert rr.ping()


def test_rg_innerhook_can_not_be_sent_by_clients_or_scripts(rr):
    rr.set("secret:1", "s")
    assert raw_error(rr, "RG.INNERHOOK", "set", "secret:1", "x") == \
        "ERR RG.INNERHOOK is internal to Gears (command hooks)"
    error = raw_error(rr, "EVAL", "return redis.call('RG.INNERHOOK', 'set', 'secret:1', 'x')", 0)
    assert "RG.INNERHOOK is internal to Gears" in error
    assert rr.get("secret:1") == "s"


def test_only_administrators_hook_commands_and_scripts_can_not_bypass_acl(server, rr):
    rr.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~app:*", "&*", "+@all", "-@dangerous",
                       "-rg.pyexecute", "-rg.configset")
    app = server.new_client(username="app", password="pw")
    try:
        assert gears_error(app, "lua", "GB('CommandReader'):register({hook = 'get'})").startswith(
            "NOPERM only a user who may run CLIENT KILL may hook commands")
        # An administrator's passthrough hook on MSET: a script of app's may still not write
        # outside app's keys through it.
        gears(rr, "lua", "GB('CommandReader'):map(function(x) return call_next(table.unpack(x, 2)) end)"
                         ":register({hook = 'mset', mode = 'sync'})")
        rr.set("secret:1", "s")
        error = raw_error(app, "EVAL", "return redis.call('mset', 'app:1', 'a', 'secret:1', 'x')", 0)
        assert "NOPERM" in error
        assert rr.get("secret:1") == "s"
        for command in ("select", "client", "acl", "config", "command"):
            assert gears_error(rr, "lua", "GB('CommandReader'):register({hook = '%s'})" % command) == \
                "Can not override a command which are not allowed inside a script"
    finally:
        rr.execute_command("ACL", "DELUSER", "app")


def test_gears_own_reads_do_not_go_through_hooks(server, rr):
    # A hook on GET that answers for the real command: Gears' own reads of string values
    # (KeysReader, a registration's record) get the values, not the hook's reply, and the
    # server lives (on Redis 7.0 the hook's check of a user-less internal call crashed it).
    gears(rr, "lua", "GB('CommandReader'):map(function(x) return 'hooked' end)"
                     ":register({hook = 'get', mode = 'sync'})")
    rr.set("s:1", "one")
    assert rr.get("s:1") == "hooked"
    assert gears(rr, "lua", "GB():map(function(x) return x.value end):run('s:*')") == [["one"], []]
    assert gears(rr, "python", "GB().map(lambda x: x['value']).run('s:*')") == [["one"], []]
    gears(rr, "python", "GB().foreach(lambda x: execute('set', 'copy', x['value']))"
                        ".register('s:*', mode='async')")
    rr.set("s:2", "two")
    assert wait_for(lambda: rr.execute_command("STRLEN", "copy") == 3)
    # A script's execute() is the user's command: the hook applies.
    assert gears(rr, "lua", "GB('ShardsIDReader'):map(function(x) return execute('get', 's:1') end)"
                            ":run()") == [["hooked"], []]
    # EVAL runs as its caller: checked, and hooked.
    assert rr.eval("return redis.call('get', 's:1')", 0) == "hooked"
    assert server.alive()


def test_a_resp3_client_gets_a_resp3_reply_through_a_hook(server, rr):
    # GET is hooked (commands=['get']); the registration does not override: the command's own
    # reply reaches the client, in its protocol.
    gears(rr, "lua", "GB():register('r3:*', {eventTypes = {'keymiss'}, commands = {'get'}, mode = 'sync'})")
    resp3 = server.new_client(protocol=3, socket_timeout=3)
    # A RESP2 null ($-1) left redis-py's RESP3 parser waiting.
    assert resp3.get("r3:missing") is None
    rr.set("r3:present", "v")
    assert resp3.get("r3:present") == "v"


# Hooks that only pass the command on: the client gets the command's own reply, nil included
# (RedisGears 1.2 replied "PY RECORD" for a nil).
PASS_THROUGH = {
    "python": "GB('CommandReader').map(lambda x: call_next(*x[1:]))"
              ".register(hook='%s', mode='sync', convertToStr=False)",
    "lua": "GB('CommandReader'):map(function(x) return call_next(table.unpack(x, 2)) end)"
           ":register({hook = '%s', mode = 'sync', convertToStr = false})",
    "rhai": 'GB("CommandReader").map(|x| { x.remove(0); call_next(x) })'
            '.register(#{hook: "%s", mode: "sync", convertToStr: false})',
}


@pytest.mark.parametrize("language", sorted(PASS_THROUGH))
def test_a_pass_through_hook_replies_nil_as_the_command_does(rr, language):
    for command in ("get", "hmget", "set"):
        assert gears(rr, language, PASS_THROUGH[language] % command) == "OK"
    assert rr.set("k", "v") is True
    assert rr.get("k") == "v"
    assert rr.get("missing") is None
    rr.hset("h", "a", "1")
    # A Lua table can not hold a nil: the missing field is a hole, the end of the sequence.
    assert rr.hmget("h", "a", "nope") == (["1"] if language == "lua" else ["1", None])


@pytest.mark.parametrize("language", ["python", "rhai"])
def test_override_reply_of_nothing_is_the_nil_reply(rr, language):
    script = {"python": "GB().foreach(lambda x: override_reply(None)).register(prefix='gone:*', "
                        "eventTypes=['keymiss'], commands=['get'], mode='sync')",
              "rhai": 'GB().foreach(|x| override_reply(())).register("gone:*", #{eventTypes: ["keymiss"], '
                      'commands: ["get"], mode: "sync"})'}[language]
    assert gears(rr, language, script) == "OK"
    assert rr.get("gone:1") is None
    [registration] = registrations(rr)
    stats = dict(zip(registration[7][0::2], registration[7][1::2]))
    assert (stats["numTriggered"], stats["numSuccess"]) == (1, 1)
