"""Who may do what: scripts act with the ACL rights of the user who sent them, readers yield only
keys that user may read, RG.EXPLAIN has no effects, and every RG command declares itself."""
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import RedisServer
from helpers import direct_error, gears, gears_error, raw_reply, wrapped

LANGUAGES = ["python", "lua", "rhai"]

# A script whose top level runs one command, per language; the command is formatted in.
ONE_COMMAND = {
    "python": "execute({args})",
    "lua": "execute({args})",
    "rhai": "execute({args});",
}


def one_command(language, *args):
    quoted = ", ".join('"%s"' % a for a in args)
    return ONE_COMMAND[language].format(args=quoted)


@pytest.fixture
def alice(server, r):
    """A user allowed only to read `user:*` keys and to run Lua and Rhai (and Python, so the
    three languages can be compared)."""
    r.execute_command("ACL", "SETUSER", "alice", "reset", "on", "nopass", "~user:*", "+@read",
                      "+rg.luaexecute", "+rg.rhaiexecute", "+rg.pyexecute", "+rg.explain")
    client = server.new_client(username="alice", password="x")
    yield client
    client.close()
    r.execute_command("ACL", "DELUSER", "alice")


@pytest.mark.parametrize("language", LANGUAGES)
def test_execute_is_refused_what_the_user_may_not_do(r, alice, language):
    r.set("secret:1", "s")
    r.set("user:1", "u")
    # The same command the user could not send directly gets the same NOPERM.
    for command in [("GET", "secret:1"), ("FLUSHALL",), ("SET", "user:1", "x"), ("PUBLISH", "ch", "m")]:
        expected = direct_error(alice, *command)
        assert expected.startswith("NOPERM")
        assert gears_error(alice, language, one_command(language, *command)) == \
            wrapped(language, expected)
    # What the user may do works.
    assert gears(alice, language, one_command(language, "GET", "user:1")) == "OK"
    assert r.get("secret:1") == "s" and r.get("user:1") == "u"


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_script_can_not_grant_itself_rights(r, alice, language):
    before = r.execute_command("ACL", "GETUSER", "alice")
    error = gears_error(alice, language, one_command(language, "ACL", "SETUSER", "alice", "+@all", "~*"))
    # ACL is refused in scripts (and the user lacks it anyway).
    assert error == wrapped(language, "ERR command 'acl|setuser' is not allowed on script mode") or \
        error == wrapped(language, direct_error(alice, "ACL", "SETUSER", "alice", "+@all", "~*"))
    assert r.execute_command("ACL", "GETUSER", "alice") == before
    assert direct_error(alice, "GET", "secret:1").startswith("NOPERM")


@pytest.mark.parametrize("language, script", [
    ("python", "GB().map(lambda x: x['key']).run()"),
    ("python", "GB('KeysOnlyReader').run()"),
    ("python", "GB().map(lambda x: x['key']).run('secret:1')"),
    ("lua", "GB():map(function(x) return x.key end):run()"),
    ("rhai", 'GB().map(|x| x.key).run()'),
])
def test_readers_yield_only_keys_the_user_may_read(r, alice, language, script):
    r.set("secret:1", "s")
    r.hset("secret:2", "f", "v")
    r.set("user:1", "u")
    r.set("user:2", "u")
    results, errors = gears(alice, language, script)
    assert errors == []
    assert sorted(results) == ([] if "secret:1" in script else ["user:1", "user:2"])


def test_read_permission_alone_is_enough_for_the_reader(r, server):
    r.execute_command("ACL", "SETUSER", "reader", "reset", "on", "nopass", "%R~pub:*", "+@read",
                      "+rg.luaexecute")
    reader = server.new_client(username="reader", password="x")
    r.set("pub:1", "p")
    r.set("priv:1", "p")
    assert gears(reader, "lua", "GB():map(function(x) return x.value end):run()") == [["p"], []]
    error = gears_error(reader, "lua", one_command("lua", "SET", "pub:1", "x"))
    assert error == wrapped("lua", direct_error(reader, "SET", "pub:1", "x"))
    r.execute_command("ACL", "DELUSER", "reader")


def test_the_stream_reader_checks_the_stream(r, alice):
    r.xadd("secret:s", {"f": "v"})
    results, errors = gears(alice, "python", "GB('StreamReader').run('secret:s')")
    assert results == []
    assert errors == [direct_error(alice, "XREAD", "STREAMS", "secret:s", "0")]


def test_rights_are_those_of_the_moment_of_each_command(r, server, alice):
    """The user is looked up at each command: rules changed while an execution runs apply to
    its next command, and a deleted user can do nothing more."""
    r.set("user:1", "u")
    script = ("import time\n"
              "def gen():\n"
              "    first = execute('GET', 'user:1')\n"
              "    time.sleep(0.5)\n"
              "    try:\n"
              "        second = execute('GET', 'user:1')\n"
              "    except Exception as e:\n"
              "        second = str(e)\n"
              "    yield [first, second]\n"
              "GB('PythonReader').run(gen)")
    def change_rules():
        time.sleep(0.2)
        server.new_client().execute_command("ACL", "SETUSER", "alice", "resetkeys", "~other:*")
    changer = threading.Thread(target=change_rules)
    changer.start()
    reply = gears(alice, "python", script)
    changer.join()
    denied = direct_error(alice, "GET", "user:1")
    assert reply == [[str(["u", denied])], []]


def test_a_deleted_user_can_do_nothing_more(r, server, alice):
    r.set("user:1", "u")
    script = ("import time\n"
              "def gen():\n"
              "    time.sleep(0.5)\n"
              "    try:\n"
              "        execute('GET', 'user:1')\n"
              "    except Exception as e:\n"
              "        yield 'after delete: ' + str(e)\n"
              "GB('PythonReader').run(gen)")
    # UNBLOCKING: ACL DELUSER disconnects alice's clients, and a blocking execution whose client
    # is gone is aborted; this one goes on, as the deleted user.
    execution = gears(alice, "python", script, "UNBLOCKING")
    r.execute_command("ACL", "DELUSER", "alice")
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == [
        ["after delete: NOPERM the ACL user 'alice' this execution runs as no longer exists"], []]


EXPLAIN_WRITES = {
    "python": ("execute('SET', 'x', '1')\nGB().run()", 1, 1),
    "lua": ("execute('SET', 'x', '1')\nGB():run()", 1, 1),
    "rhai": ('execute("SET", "x", "1");\nGB().run();', 1, 1),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_explain_has_no_effects(r, language):
    script, line, position = EXPLAIN_WRITES[language]
    assert direct_error(r, "RG.EXPLAIN", language, script) == \
        wrapped(language, "ERR RG.EXPLAIN runs the script read-only: 'set' is not allowed", line, position)
    assert r.get("x") is None
    assert direct_error(r, "RG.EXPLAIN", language, one_command(language, "PUBLISH", "ch", "m")) == \
        wrapped(language, "ERR RG.EXPLAIN runs the script read-only: 'publish' is not allowed")


def test_explain_may_read_at_the_top_level(r):
    r.set("threshold", "35")
    script = "t = int(execute('GET', 'threshold'))\nGB().filter(lambda x: int(x['value']) > t).run('user:*')"
    assert r.execute_command("RG.EXPLAIN", "python", script) == [
        'reader: KeysReader pattern="user:*" noScan=false readValue=true',
        "1: filter [runs in python] [local]",
        "2: to string [runs in rust] [local]",
        "3: collect [runs in rust] [moves records: collect to initiator]",
    ]


def test_made_up_command_names_are_not_kept(r):
    # A read-only run judges each command by its flags, which Gears keeps per name: names no
    # command has, however long, are not kept (300 of 64 KB here).
    before = r.info("rg")["rg_used_memory_native"]
    script = ("n = 0\n"
              "for i in range(300):\n"
              "    try:\n"
              "        execute('x%d' % i + 'y' * 65536)\n"
              "    except Exception:\n"
              "        n += 1\n"
              "execute('nosuch%d' % n)\n"
              "GB().run()")
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("RG.EXPLAIN", "python", script)
    assert "ERR unknown command 'nosuch300', with args beginning with: " in str(e.value)
    assert r.info("rg")["rg_used_memory_native"] - before < 4 << 20
    assert r.ping()


def test_explain_needs_the_right_to_run_the_language(r, server):
    r.execute_command("ACL", "SETUSER", "luaonly", "reset", "on", "nopass", "~*", "+@read",
                      "+rg.luaexecute", "+rg.explain")
    client = server.new_client(username="luaonly", password="x")
    expected = direct_error(client, "RG.PYEXECUTE", "1")
    assert direct_error(client, "RG.EXPLAIN", "python", "GB().run()") == expected
    assert client.execute_command("RG.EXPLAIN", "lua", "GB():run()") == [
        'reader: KeysReader pattern="*" noScan=false readValue=true',
        "1: to string [runs in rust] [local]",
        "2: collect [runs in rust] [moves records: collect to initiator]"]
    r.execute_command("ACL", "DELUSER", "luaonly")


COMMANDS = ["RG.PYEXECUTE", "RG.LUAEXECUTE", "RG.RHAIEXECUTE", "RG.EXPLAIN", "RG.CONFIGGET", "RG.CONFIGSET"]


def test_every_rg_command_has_a_summary(r):
    names = [n.decode() if isinstance(n, bytes) else n
             for n in raw_reply(r, "COMMAND", "LIST", "FILTERBY", "MODULE", "rg")]
    assert len(names) == 31
    docs = raw_reply(r, "COMMAND", "DOCS", *names)
    assert sorted(docs) == sorted(names)
    for name, doc in docs.items():
        assert doc["summary"] and doc["module"] == "rg", name


def test_every_command_has_docs(r):
    docs = raw_reply(r, "COMMAND", "DOCS", *COMMANDS)
    assert sorted(docs) == sorted(COMMANDS)
    for name, doc in docs.items():
        assert doc["summary"] and doc["since"] == "1.0.0", name
        assert doc["group"] == "module" and doc["module"] == "rg", name
        assert doc["arguments"], name
    py = docs["RG.PYEXECUTE"]
    assert py["summary"] == "Runs a Python script (trusted code: it runs as the server's OS user)"
    assert [(a["name"], a["type"], a.get("token"), a.get("flags", [])) for a in py["arguments"]] == [
        ("script", "string", None, []),
        ("UNBLOCKING", "pure-token", "UNBLOCKING", ["optional"]),
        ("id", "string", "ID", ["optional"]),
        ("description", "string", "DESCRIPTION", ["optional"]),
        ("UPGRADE", "pure-token", "UPGRADE", ["optional"]),
        ("session", "string", "REPLACE_WITH", ["optional"]),
        ("FORCE_REINSTALL_REQUIREMENTS", "pure-token", "FORCE_REINSTALL_REQUIREMENTS", ["optional"]),
        ("requirement", "string", "REQUIREMENTS", ["optional", "multiple"]),
    ]
    config_set = docs["RG.CONFIGSET"]["arguments"][0]
    assert (config_set["type"], config_set["flags"]) == ("block", ["optional", "multiple"])
    assert [a["name"] for a in config_set["arguments"]] == ["name", "value"]


def test_command_flags_say_what_commands_do(r, server):
    info = {c[0].upper(): c for c in raw_reply(r, "COMMAND", "INFO", *COMMANDS)}
    flags = {name: set(i[2]) for name, i in info.items()}
    # Scripts write: no RG command that runs one says readonly.
    for name in ["RG.PYEXECUTE", "RG.LUAEXECUTE", "RG.RHAIEXECUTE"]:
        assert "readonly" not in flags[name]
        assert "blocking" in flags[name]
        assert info[name][1] == -2
    assert "admin" in flags["RG.PYEXECUTE"] and "admin" in flags["RG.CONFIGSET"]
    assert "admin" not in flags["RG.LUAEXECUTE"] and "admin" not in flags["RG.RHAIEXECUTE"]
    kind, version = server.kind
    if kind == "valkey" or version >= (7, 4, 0):
        categories = {name: set(i[6]) for name, i in info.items()}
        assert categories["RG.LUAEXECUTE"] == {"@gears", "@slow", "@blocking"}
        assert {"@gears", "@admin", "@dangerous"} <= categories["RG.PYEXECUTE"]
        # An admin grants scripts without Python by category.
        r.execute_command("ACL", "SETUSER", "nopy", "reset", "on", "nopass", "~*", "+@all", "-@dangerous")
        client = server.new_client(username="nopy", password="x")
        assert gears(client, "lua", "return 1") == "OK"
        assert direct_error(client, "RG.PYEXECUTE", "1").startswith("NOPERM")
        r.execute_command("ACL", "DELUSER", "nopy")


def test_python_can_be_switched_off():
    s = RedisServer(extra_args=("PythonEnabled", "0"))
    try:
        client = s.new_client()
        assert gears_error(client, "python", "GB().run()") == \
            "Python is disabled on this server (PythonEnabled 0)"
        assert direct_error(client, "RG.EXPLAIN", "python", "GB().run()") == \
            "Python is disabled on this server (PythonEnabled 0)"
        assert gears(client, "lua", "GB('ShardsIDReader'):run()") == [["1"], []]
        assert client.info("rg")["rg_python"] == "disabled"
        assert client.execute_command("RG.CONFIGGET", "PythonEnabled") == [0]
    finally:
        s.stop()


def test_readers_check_the_read_command_not_only_the_key(r, server):
    """A user whose rules name the keys but not a command that reads them (selectors, `+exists`)
    gets nothing from a reader, as a direct read gets NOPERM."""
    r.set("secret:1", "TOPSECRET")
    r.hset("secret:h", "pw", "hunter2")
    r.set("user:1", "u")
    r.execute_command("ACL", "SETUSER", "carol", "reset", "on", "nopass", "~secret:*", "+exists",
                      "+rg.luaexecute")
    r.execute_command("ACL", "SETUSER", "dave", "reset", "on", "nopass", "~user:*", "+@read",
                      "+rg.luaexecute", "(~secret:* +exists)")
    try:
        for name in ("carol", "dave"):
            client = server.new_client(username=name, password="x")
            assert direct_error(client, "GET", "secret:1").startswith("NOPERM")
            results, errors = gears(client, "lua", "GB():map(function(x) return x.key end):run()")
            assert errors == []
            assert results == ([] if name == "carol" else ["user:1"])
            assert gears(client, "lua", "GB():map(function(x) return x.key end):run('secret:1')") == [[], []]
    finally:
        r.execute_command("ACL", "DELUSER", "carol", "dave")


@pytest.mark.parametrize("command, name", [
    (("SLOWLOG", "RESET"), "slowlog|reset"),
    (("MEMORY", "PURGE"), "memory|purge"),
    (("CONFIG", "SET", "maxmemory", "1"), "config|set"),
    (("CLIENT", "KILL", "ID", "1"), "client|kill"),
])
def test_explain_judges_subcommands_by_their_own_flags(r, command, name):
    args = ", ".join("'%s'" % a for a in command)
    assert direct_error(r, "RG.EXPLAIN", "lua", "execute(%s)\nGB():run()" % args) == \
        "script:1: ERR RG.EXPLAIN runs the script read-only: '%s' is not allowed" % name


def test_explain_allows_plain_reads(r):
    r.set("x", "1")
    script = "execute('GET', 'x') execute('EXISTS', 'x') execute('PING') execute('TIME') GB():run()"
    assert len(r.execute_command("RG.EXPLAIN", "lua", script)) == 3


def test_noperm_names_the_subcommand(r, server):
    r.execute_command("ACL", "SETUSER", "eve", "reset", "on", "nopass", "~*", "+@read",
                      "+rg.luaexecute")
    try:
        client = server.new_client(username="eve", password="x")
        expected = direct_error(client, "MEMORY", "PURGE")
        assert gears_error(client, "lua", "execute('MEMORY', 'PURGE')") == wrapped("lua", expected)
    finally:
        r.execute_command("ACL", "DELUSER", "eve")


def test_servers_without_module_categories_warn_at_load(server):
    kind, version = server.kind
    warned = "gives module commands no ACL categories" in server.read_log()
    assert warned == (kind == "redis" and version < (7, 4, 0))
