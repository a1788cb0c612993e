"""Native extensions (docs/extending.md): the example extensions of examples/ (hll_count; the
zset_entries reader with score_at_least, entry_member and score_bucket), loaded with the module
built with them (libgears_extended.so), called from Python, Lua and Rhai: exact replies, RG.EXPLAIN,
the errors of unknown names, bad arguments and versions, the reader's ACL and types; and a server
with plain libgears.so, which has none of them."""
import pytest

from conftest import EXTENDED_MODULE, RedisServer
from helpers import direct_error, gears, gears_error, wait_for, wrapped

LANGUAGES = ["python", "lua", "rhai"]
AVAILABLE = ("this server has: entry_member 1.0, hll_count 1.0, score_at_least 1.0, "
             "score_bucket 1.0, zset_entries 1.0")


@pytest.fixture(scope="module")
def extended():
    s = RedisServer(module=EXTENDED_MODULE)
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died during the tests:\n" + log


@pytest.fixture
def xr(extended):
    client = extended.new_client()
    client.flushall()
    for i, name in enumerate(["ann", "bob", "ann", "cy", "bob", "dee", "ann"]):
        client.hset("user:%d" % i, mapping={"name": name, "age": str(20 + i)})
    client.hset("other:1", mapping={"name": "zed"})
    client.zadd("lb", {"a": 10, "b": 55, "c": 70, "d": 52, "e": 99.5})
    yield client
    assert extended.new_client().ping()


# The same pipeline in each language.
SCRIPTS = {
    "hll_count": {
        "python": "GB().native('hll_count', 'name').run('user:*')",
        "lua": "GB():native('hll_count', 'name'):run('user:*')",
        "rhai": 'GB().native("hll_count", "name").run("user:*")',
    },
    # A language value (the map's result) reaches the native step: converted once.
    "hll_count after a callback": {
        "python": "GB().map(lambda x: x['value']['name']).native('hll_count').run('user:*')",
        "lua": "GB():map(function(x) return x.value.name end):native('hll_count'):run('user:*')",
        "rhai": 'GB().map(|x| x.value.name).native("hll_count").run("user:*")',
    },
    "hll_count pinned to major 1, precision 10": {
        "python": "GB().native('hll_count@1', 'name', 10).run('user:*')",
        "lua": "GB():native('hll_count@1', 'name', 10):run('user:*')",
        "rhai": 'GB().native("hll_count@1", "name", 10).run("user:*")',
    },
    "zset_entries": {
        "python": "GB('zset_entries').native('entry_member').run('lb')",
        "lua": "GB('zset_entries'):native('entry_member'):run('lb')",
        "rhai": 'GB("zset_entries").native("entry_member").run("lb")',
    },
    "zset_entries in batches of 2, filtered": {
        "python": "GB('zset_entries').native('score_at_least', 55).native('entry_member').run('lb', batch=2)",
        "lua": "GB('zset_entries'):native('score_at_least', 55):native('entry_member'):run('lb', {batch=2})",
        "rhai": 'GB("zset_entries").native("score_at_least", 55).native("entry_member").run("lb", #{batch: 2})',
    },
    # A native filter between two callbacks of one language.
    "a native filter between two callbacks": {
        "python": "GB('zset_entries').map(lambda r: {'member': r['member'], 'score': r['score'] * 2}).native('score_at_least', 110).map(lambda r: r['member'] + '!').run('lb')",
        "lua": "GB('zset_entries'):map(function(r) return {member=r.member, score=r.score * 2} end):native('score_at_least', 110):map(function(r) return r.member .. '!' end):run('lb')",
        "rhai": 'GB("zset_entries").map(|r| #{member: r.member, score: r.score * 2}).native("score_at_least", 110).map(|r| r.member + "!").run("lb")',
    },
    "groupby a native extractor": {
        "python": "GB('zset_entries').groupby(native('score_bucket', 50), lambda k, a, r: (a or 0) + 1).run('lb')",
        "lua": "GB('zset_entries'):groupby(native('score_bucket', 50), function(k, a, r) return (a or 0) + 1 end):run('lb')",
        "rhai": 'GB("zset_entries").groupby(native("score_bucket", 50), |k, a, r| if a == () { 1 } else { a + 1 }).run("lb")',
    },
    "countby a native extractor": {
        "python": "GB('zset_entries').countby(native('score_bucket', 50)).run('lb')",
        "lua": "GB('zset_entries'):countby(native('score_bucket', 50)):run('lb')",
        "rhai": 'GB("zset_entries").countby(native("score_bucket", 50)).run("lb")',
    },
    "repartition by a native extractor": {
        "python": "GB('zset_entries').repartition(native('score_bucket', 1000)).native('entry_member').run('lb')",
        "lua": "GB('zset_entries'):repartition(native('score_bucket', 1000)):native('entry_member'):run('lb')",
        "rhai": 'GB("zset_entries").repartition(native("score_bucket", 1000)).native("entry_member").run("lb")',
    },
    "a missing sorted set": {
        "python": "GB('zset_entries').run('nothing')",
        "lua": "GB('zset_entries'):run('nothing')",
        "rhai": 'GB("zset_entries").run("nothing")',
    },
    "a key of another type": {
        "python": "GB('zset_entries').run('user:1')",
        "lua": "GB('zset_entries'):run('user:1')",
        "rhai": 'GB("zset_entries").run("user:1")',
    },
}

EXPECTED = {
    "hll_count": [["4"], []],
    "hll_count after a callback": [["4"], []],
    "hll_count pinned to major 1, precision 10": [["4"], []],
    "zset_entries": [["a", "d", "b", "c", "e"], []],
    "zset_entries in batches of 2, filtered": [["b", "c", "e"], []],
    "a native filter between two callbacks": [["b!", "c!", "e!"], []],
    "groupby a native extractor": [["{'key': '50', 'value': 4}", "{'key': '0', 'value': 1}"], []],
    "countby a native extractor": [["{'key': '50', 'value': 4}", "{'key': '0', 'value': 1}"], []],
    "repartition by a native extractor": [["a", "d", "b", "c", "e"], []],
    "a missing sorted set": [[], []],
    "a key of another type": [[], ["WRONGTYPE Operation against a key holding the wrong kind of value"]],
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("case", list(SCRIPTS))
def test_every_language_gets_the_same_reply(xr, case, language):
    reply = gears(xr, language, SCRIPTS[case][language])
    if case.startswith("groupby") or case.startswith("countby"):
        # Group order is the dict order of each language's run; the groups are the same.
        reply = [sorted(reply[0]), reply[1]]
        assert reply == [sorted(EXPECTED[case][0]), EXPECTED[case][1]]
    else:
        assert reply == EXPECTED[case]


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_native_step_first_reads_only_its_fields(xr, language):
    # hll_count('name') declares that it reads only `name` (its projection): the keys reader
    # looks that field up in each hash instead of copying all of them. Large other fields,
    # a missing field, binary and integer-encoded values, a `name` too large for a batch (read
    # after it, in slices) and keys of other types count as they would if read whole.
    big = b"x" * (300 << 10)
    xr.hset("p:1", mapping={"name": "ann", "blob": big})
    xr.hset("p:2", mapping={"name": "bob", "blob": big})
    xr.hset("p:3", mapping={"other": "ann"})
    xr.hset("p:4", mapping={"name": b"\xff\x00bin", "age": "7"})
    xr.hset("p:5", mapping={"name": "12"})
    xr.set("p:6", "a string")
    xr.hset("p:7", mapping={"age": "3", "name": "ann"})
    xr.hset("p:8", mapping={"name": b"y" * (300 << 10)})
    count = {
        "python": "GB().native('hll_count', {}).run('p:*')",
        "lua": "GB():native('hll_count', {}):run('p:*')",
        "rhai": 'GB().native("hll_count", {}).run("p:*")',
    }[language]
    name = '"name"' if language == "rhai" else "'name'"
    nothing = {"python": "None", "lua": "nil", "rhai": "()"}[language]
    assert gears(xr, language, count.format(name)) == [["5"], []]
    # Without a field it counts key names: the reader reads no value.
    assert gears(xr, language, count.format(nothing)) == [["8"], []]


def test_a_projection_reads_less_than_the_whole_records(xr):
    # Under an 8 MB execution memory limit: hll_count('name') reads only the names of hashes
    # whose other field has 20 MB; a pipeline reading them whole passes the limit.
    before = xr.execute_command("RG.CONFIGGET", "ExecutionMemoryLimit")[0]
    pipe = xr.pipeline(transaction=False)
    for i in range(200):
        pipe.hset("m:%d" % i, mapping={"name": "n%d" % (i % 50), "blob": b"x" * (100 << 10)})
    pipe.execute()
    assert xr.execute_command("RG.CONFIGSET", "ExecutionMemoryLimit", "8mb") == ["OK"]
    # A declared field too large for a batch is read alone after it, not with its hash.
    xr.hset("q:1", mapping={"name": b"n" * (300 << 10), "blob": b"x" * (20 << 20)})
    xr.hset("q:2", mapping={"name": "small", "blob": b"x" * (20 << 20)})
    try:
        assert gears(xr, "lua", "GB():native('hll_count', 'name'):run('m:*')") == [["50"], []]
        assert gears(xr, "lua", "GB():native('hll_count', 'name'):run('q:*')") == [["2"], []]
        assert gears(xr, "lua", "GB():native('hll_count', 'name'):run('q:1')") == [["1"], []]
        whole = "GB():map(function(x) return x.value.name end):native('hll_count'):run('q:*')"
        assert gears(xr, "lua", whole) == [[], [
            "OOM the execution used more than its memory limit of 8388608 bytes "
            "(ExecutionMemoryLimit)"]]
    finally:
        assert xr.execute_command("RG.CONFIGSET", "ExecutionMemoryLimit", before) == ["OK"]


def test_the_estimate_of_a_larger_set(xr):
    # 3,000 distinct names, each twice: HyperLogLog++ is within 2% (exact in its sparse form).
    pipe = xr.pipeline(transaction=False)
    for i in range(6000):
        pipe.hset("big:%d" % i, "name", "n%d" % (i % 3000))
    pipe.execute()
    reply = gears(xr, "lua", "GB():native('hll_count', 'name'):run('big:*')")
    assert reply[1] == []
    assert abs(int(reply[0][0]) - 3000) <= 60


EXPLAIN = [
    "reader: KeysReader pattern=\"user:*\" noScan=false readValue=true",
    "1: map [runs in {language}] [local]",
    "2: native aggregate (partial) hll_count@1('name') [runs in rust] [local]",
    "3: collect [runs in rust] [moves records: collect to initiator]",
    "4: native aggregate (final) hll_count@1('name') [runs in rust] [local]",
    "5: to string [runs in rust] [local]",
    "6: collect [runs in rust] [moves records: collect to initiator]",
]


@pytest.mark.parametrize("language,script", [
    ("python", "GB().map(lambda x: x).native('hll_count', 'name').run('user:*')"),
    ("lua", "GB():map(function(x) return x end):native('hll_count', 'name'):run('user:*')"),
    ("rhai", 'GB().map(|x| x).native("hll_count", "name").run("user:*")'),
])
def test_explain_shows_native_steps_in_rust(xr, language, script):
    lines = [line.format(language=language) for line in EXPLAIN]
    assert xr.execute_command("RG.EXPLAIN", language, script) == lines


def test_explain_shows_native_readers_and_extractors(xr):
    assert xr.execute_command(
        "RG.EXPLAIN", "lua",
        "GB('zset_entries'):repartition(native('score_bucket', 10)):run('lb', {batch=5})") == [
        "reader: NativeReader zset_entries@1('lb', batch=5)",
        "1: repartition by native score_bucket@1(10) [runs in rust] "
        "[moves records: repartition by key slot]",
        "2: to string [runs in rust] [local]",
        "3: collect [runs in rust] [moves records: collect to initiator]",
    ]


ERRORS = [
    # (script per language, error text, Rhai position)
    ({"python": "GB().native('nope').run()", "lua": "GB():native('nope'):run()",
      "rhai": 'GB().native("nope").run()'},
     "unknown native operator 'nope' (%s)" % AVAILABLE, 6),
    ({"python": "GB().native('hll_count', 3).run()", "lua": "GB():native('hll_count', 3):run()",
      "rhai": 'GB().native("hll_count", 3).run()'},
     "hll_count: argument 1 must be a string, not int", 6),
    ({"python": "GB().native('hll_count', 'a', 30).run()",
      "lua": "GB():native('hll_count', 'a', 30):run()",
      "rhai": 'GB().native("hll_count", "a", 30).run()'},
     "hll_count: precision must be between 4 and 18, not 30", 6),
    ({"python": "GB().native('hll_count@2', 'name').run()",
      "lua": "GB():native('hll_count@2', 'name'):run()",
      "rhai": 'GB().native("hll_count@2", "name").run()'},
     "native operator 'hll_count' is version 1.0 on this server, not 2.x", 6),
    ({"python": "GB().native('score_bucket', 10).run()",
      "lua": "GB():native('score_bucket', 10):run()",
      "rhai": 'GB().native("score_bucket", 10).run()'},
     "native operator 'score_bucket' is an extractor: give native('score_bucket', ...) to "
     "groupby, batchgroupby, localgroupby, countby, aggregateby or repartition", 6),
    ({"python": "GB().groupby(native('hll_count'), lambda k, a, r: 1).run()",
      "lua": "GB():groupby(native('hll_count'), function(k, a, r) return 1 end):run()",
      "rhai": 'GB().groupby(native("hll_count"), |k, a, r| 1).run()'},
     "native operator 'hll_count' is an aggregate, not an extractor", 6),
    ({"python": "GB().native('zset_entries').run()", "lua": "GB():native('zset_entries'):run()",
      "rhai": 'GB().native("zset_entries").run()'},
     "'zset_entries' is a native reader, not an operator (%s)" % AVAILABLE, 6),
    ({"python": "GB('zset_entries').run()", "lua": "GB('zset_entries'):run()",
      "rhai": 'GB("zset_entries").run()'},
     "zset_entries: give the sorted set's key: run('key')", 20),
    ({"python": "GB('zset_entries').run('lb', bacth=3)",
      "lua": "GB('zset_entries'):run('lb', {bacth=3})",
      "rhai": 'GB("zset_entries").run("lb", #{bacth: 3})'},
     "zset_entries: unknown option 'bacth'", 20),
    ({"python": "GB('nope_reader').run()", "lua": "GB('nope_reader'):run()",
      "rhai": 'GB("nope_reader").run()'},
     "unknown native reader 'nope_reader' (%s)" % AVAILABLE, 19),
]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("index", range(len(ERRORS)))
def test_errors_name_the_operator(xr, language, index):
    scripts, text, position = ERRORS[index]
    assert gears_error(xr, language, scripts[language]) == wrapped(
        language, text, position=position)


NOT_DATA = "a native operator's arguments are data (strings, numbers, booleans, lists, maps, nil)"


def test_functions_are_not_native_arguments(xr):
    # They were taken as their text ("function: 0x..." became a field name).
    assert NOT_DATA in gears_error(xr, "python", "GB().native('hll_count', lambda x: x).run()")
    assert "native: argument 1 is a function; " + NOT_DATA in gears_error(
        xr, "python", "GB().native('hll_count', lambda x: x).run()")
    assert "native: argument 2 is a object; " + NOT_DATA in gears_error(
        xr, "python", "GB().native('hll_count', 'name', object()).run()")
    assert "native: argument 1 is a function; " + NOT_DATA in gears_error(
        xr, "lua", "GB():native('hll_count', function() end):run()")
    assert "native: argument 1 is a function; " + NOT_DATA in gears_error(
        xr, "rhai", 'GB().native("hll_count", |x| x).run()')
    # A list that holds itself is refused, not a stack overflow.
    assert gears_error(xr, "python", "l = []\nl.append(l)\nGB().native('hll_count', l).run()")
    assert xr.ping()


def test_a_panic_free_record_error_goes_to_the_error_list(xr):
    # score_at_least on records that have no score: each record's error, the run goes on.
    assert gears(xr, "lua", "GB():native('score_at_least', 1):run('user:1')") == [
        [], ["the record has no numeric 'score' (a zset_entries record has one)"]]


def test_the_reader_reads_as_the_scripts_user(extended, xr):
    xr.execute_command("ACL", "SETUSER", "ranker", "on", ">pw", "~user:*", "+@all")
    try:
        limited = extended.new_client(username="ranker", password="pw")
        # The error the user gets reading the key directly, on this server's version.
        denied = direct_error(limited, "ZRANGE", "lb", "0", "-1")
        assert denied.startswith("NOPERM")
        assert gears(limited, "lua", "GB('zset_entries'):run('lb')") == [[], [denied]]
        assert gears(limited, "lua", "GB():native('hll_count', 'name'):run('user:*')") == [
            ["4"], []]
    finally:
        xr.execute_command("ACL", "DELUSER", "ranker")


def test_getexecution_names_native_steps(xr):
    exec_id = gears(xr, "lua", "GB('zset_entries'):native('entry_member'):run('lb')", "UNBLOCKING")
    xr.execute_command("RG.GETRESULTSBLOCKING", exec_id)
    plan = xr.execute_command("RG.GETEXECUTION", exec_id)[0][3]
    steps = [dict(zip(step[::2], step[1::2])) for step in plan[plan.index("steps") + 1]]
    assert ("map", "entry_member@1()") in [(step["type"], step["arg"]) for step in steps]


def test_a_server_without_the_extensions_refuses_them(r):
    # The `r` fixture's server loads plain libgears.so.
    for language, script in [
        ("python", "GB().native('hll_count', 'name').run('user:*')"),
        ("lua", "GB():native('hll_count', 'name'):run('user:*')"),
        ("rhai", 'GB().native("hll_count", "name").run("user:*")'),
    ]:
        assert gears_error(r, language, script) == wrapped(
            language,
            "unknown native operator 'hll_count' "
            "(this server has no native operators or readers)",
            position=6)
    assert gears_error(r, "lua", "GB('zset_entries'):run('lb')") == wrapped(
        "lua", "unknown native reader 'zset_entries' "
        "(this server has no native operators or readers)")
    # Built-in reader names keep RedisGears 1.2's error.
    assert gears_error(r, "lua", "GB('NoSuchReader'):run()") == wrapped(
        "lua", "Given reader do not support run or not exists")


@pytest.mark.parametrize("language,script", [
    ("python", "GB().native('hll_count', 'name').foreach(lambda x: execute('set', 'seen', x))"
               ".register('user:*')"),
    ("lua", "GB():native('hll_count', 'name'):foreach(function(x) execute('set', 'seen', x) end)"
            ":register('user:*')"),
    ("rhai", 'GB().native("hll_count", "name").foreach(|x| execute("set", "seen", x))'
             '.register("user:*")'),
])
def test_a_registration_runs_native_steps(xr, language, script):
    gears(xr, language, script)
    try:
        xr.hset("user:100", "name", "new")
        # Each event's execution counts its one record.
        assert wait_for(lambda: xr.get("seen") == "1")
    finally:
        for registration in xr.execute_command("RG.DUMPREGISTRATIONS"):
            xr.execute_command("RG.UNREGISTER", registration[1])
