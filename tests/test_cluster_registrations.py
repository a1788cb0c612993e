"""The registrations test table, run on one instance and on a 3-master loopback Redis Cluster:
the same registrations, the same client actions, the same observable outcome.

Each scenario is (language, registration scripts, client actions, the outcome they lead to)
and its exact expected outcome. It runs on the single instance (a plain client), then on the
cluster: the RG.* commands go to one master (a different one per scenario; a second master
for UPGRADE, RG.UNREGISTER and the like), the data commands through a cluster client, so every
key's command reaches the shard that owns it and its events fire there. Both outcomes must be
the expected one: comparing two wrong answers still fails.

On the cluster a registration's `execute()` may only touch its shard's keys (docs/cluster.md):
the keys a registration writes carry its event key as hash tag (`'{' + key + '}:n'`). The keys
of each scenario span the three shards (checked). After every scenario all registrations are
removed (and must be gone from every master) and the data is flushed.
"""
import time

import pytest

from cluster import Cluster
from conftest import RedisServer
from helpers import gears, wait_for

# Sync registrations that write: Redis 7.0 needs the setting (see test_registrations.py).
ARGS = ("SyncRegistrationWrites", "1")
LANGUAGES = ["python", "lua", "rhai"]
# An async outcome, once reached, must stay: it is read again this long after.
SETTLE = 0.1


# --- Where a scenario runs ------------------------------------------------------------------

class Env:
    """`admin` gets the scenario's RG.* commands, `other` those sent from elsewhere (UPGRADE,
    RG.UNREGISTER: another master on the cluster; the same server on one instance); `data` the
    data commands (a cluster client on the cluster); `nodes` are every master's clients."""

    def __init__(self, admin, other, data, nodes, owner=None):
        self.admin, self.other, self.data, self.nodes, self.owner = admin, other, data, nodes, owner

    def clean(self):
        for node in self.nodes:
            for registration in node.execute_command("RG.DUMPREGISTRATIONS"):
                try:
                    node.execute_command("RG.UNREGISTER", registration[1])
                except Exception:
                    pass  # removed meanwhile (an unregister reaching every shard)
        gone = wait_for(lambda: all(n.execute_command("RG.DUMPREGISTRATIONS") == [] for n in self.nodes),
                        timeout=5)
        for node in self.nodes:
            node.flushall()
        assert gone, "registrations left after the scenario"


@pytest.fixture(scope="module")
def single():
    s = RedisServer(extra_args=ARGS)
    client = s.new_client()
    yield lambda index: Env(client, client, client, [client])
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died:\n" + log


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(masters=3, module_args=ARGS)
    masters = c.masters
    nodes = [m.new_client() for m in masters]
    data = c.client()
    owner = lambda key: data.get_node_from_key(key).port

    def env(index):
        return Env(nodes[index % 3], nodes[(index + 1) % 3], data, nodes, owner)
    yield env
    alive = all(n.alive() for n in c.nodes)
    c.stop()
    assert alive, "a cluster node died"


# --- The table ------------------------------------------------------------------------------

class Scenario:
    def __init__(self, name, language, scripts, act, observe, expected, keys, wait=True, timeout=5):
        # scripts: (script, option, ...) tuples sent to `admin`, each must reply OK.
        # act(env) -> what the client saw; observe(env) -> the state it led to.
        # expected: (act's result, observe's result). keys: the scenario's keys (they must
        # span the three shards). wait: async, so observe until it gives the expected state
        # (at most `timeout` seconds), and once more a moment later.
        self.name, self.language, self.scripts = name, language, scripts
        self.act, self.observe, self.expected, self.keys = act, observe, expected, keys
        self.wait, self.timeout = wait, timeout


SCENARIOS = []


class ClusterDiffers(AssertionError):
    """The cluster's outcome is not the single instance's (the only failure an xfail excuses: a
    wrong single-instance outcome fails the test all the same)."""


def add(name, language, scripts, act, observe, expected, keys, wait=True, timeout=5, xfail=None):
    marks = [pytest.mark.xfail(strict=True, raises=ClusterDiffers, reason=xfail)] if xfail else []
    SCENARIOS.append(pytest.param(Scenario(name, language, scripts, act, observe, expected, keys, wait, timeout),
                                  id="%s-%s" % (name, language), marks=marks))


def options(language, opts):
    """register()'s keyword arguments in each language's syntax (after a positional prefix)."""
    def value(v):
        if isinstance(v, bool):
            return str(v) if language == "python" else str(v).lower()
        if isinstance(v, str):
            return '"%s"' % v if language == "rhai" else "'%s'" % v
        if isinstance(v, list):
            items = ", ".join(value(i) for i in v)
            return "{%s}" % items if language == "lua" else "[%s]" % items
        return str(v)
    if language == "python":
        return "".join(", %s=%s" % (k, value(v)) for k, v in opts.items())
    if not opts:
        return ""
    if language == "lua":
        return ", {%s}" % ", ".join("%s = %s" % (k, value(v)) for k, v in opts.items())
    return ", #{%s}" % ", ".join("%s: %s" % (k, value(v)) for k, v in opts.items())


def counter(language, prefix, suffix=":n", reader="", **opts):
    """A registration on `prefix` that INCRs `{<key>}<suffix>` per record."""
    o = options(language, opts)
    if language == "python":
        return ("GB(%s).foreach(lambda x: execute('incr', '{' + x['key'] + '}%s')).register('%s'%s)"
                % (reader and "'%s'" % reader, suffix, prefix, o))
    if language == "lua":
        return ("GB(%s):foreach(function(x) execute('incr', '{' .. x.key .. '}%s') end):register('%s'%s)"
                % (reader and "'%s'" % reader, suffix, prefix, o))
    return ('GB(%s).foreach(|x| execute("incr", "{" + x.key + "}%s")).register("%s"%s)'
            % (reader and '"%s"' % reader, suffix, prefix, o))


def keys(prefix, n=6):
    return ["%s%d" % (prefix, i) for i in range(n)]


def counts(names, suffix=":n"):
    return lambda env: [env.data.get("{%s}%s" % (k, suffix)) for k in names]


def stats(env, field):
    """A RegistrationData field summed over every registration of every master."""
    total = 0
    for node in env.nodes:
        for registration in node.execute_command("RG.DUMPREGISTRATIONS"):
            fields = registration[7]
            total += dict(zip(fields[0::2], fields[1::2]))[field]
    return total


def agreed(values):
    """The value every master gives, or everything they gave when they disagree."""
    return values[0] if all(v == values[0] for v in values) else ("masters disagree", values)


def set_all(names, value="v"):
    def act(env):
        for k in names:
            env.data.set(k, value)
    return act


def both(*functions):
    return lambda env: tuple(f(env) for f in functions)


# KeysReader, async (the default), by prefix: every event once, on the shard of its key.
for language in LANGUAGES:
    ks = keys("k:")
    add("async-prefix", language, [(counter(language, "k:*"),)],
        set_all(ks + ["kx:1", "k"]),
        both(counts(ks + ["kx:1", "k"]), lambda env: stats(env, "numTriggered")),
        (None, (["1"] * 6 + [None, None], 6)), ks)

# mode='sync': the write is visible right after the client's command returns.
for language in LANGUAGES:
    ks = keys("sy:")

    def act(env, ks=ks):
        seen = []
        for round in range(2):
            for k in ks:
                env.data.set(k, "v")
                seen.append(env.data.get("{%s}:n" % k))
        return seen
    add("sync", language, [(counter(language, "sy:*", mode="sync"),)], act,
        lambda env: stats(env, "numSuccess"), (["1"] * 6 + ["2"] * 6, 12), ks, wait=False)

# mode='async_local'.
for language in LANGUAGES:
    ks = keys("al:")
    add("async_local", language, [(counter(language, "al:*", mode="async_local"),)],
        set_all(ks), both(counts(ks), lambda env: stats(env, "numSuccess")),
        (None, (["1"] * 6, 6)), ks)

# eventTypes: only hset counts (set and del do not).
for language in LANGUAGES:
    ks = keys("e:")

    def act(env, ks=ks):
        for i, k in enumerate(ks):
            if i % 2:
                env.data.set(k, "v")
            else:
                env.data.hset(k, "f", "v")
        for k in ks:
            env.data.delete(k)
    add("eventTypes", language, [(counter(language, "e:*", eventTypes=["hset"]),)], act,
        both(counts(ks), lambda env: stats(env, "numTriggered")),
        (None, (["1", None] * 3, 3)), ks)

# keyTypes: only hashes count.
for language in LANGUAGES:
    ks = keys("t:")

    def act(env, ks=ks):
        env.data.hset(ks[0], "f", "v")
        env.data.set(ks[1], "v")
        env.data.rpush(ks[2], "a")
        env.data.hset(ks[3], "f", "v")
        env.data.sadd(ks[4], "m")
        env.data.hset(ks[5], "f", "v")
    add("keyTypes", language, [(counter(language, "t:*", keyTypes=["hash"]),)], act,
        both(counts(ks), lambda env: stats(env, "numTriggered")),
        (None, (["1", None, None, "1", None, "1"], 3)), ks)

# Records, with and without their value.
RECORD = {
    "python": "GB().foreach(lambda x: execute('set', '{' + x['key'] + '}:rec', str(x))).register('%s'%s)",
    "lua": "GB():foreach(function(x) execute('set', '{' .. x.key .. '}:rec', x.key .. '/' .. x.event .. '/' "
           ".. tostring(x.type) .. '/' .. tostring(type(x.value) == 'table' and x.value.a or x.value)) end)"
           ":register('%s'%s)",
    "rhai": 'GB().foreach(|x| execute("set", "{" + x.key + "}:rec", `${x.key}/${x.event}/${x.type}/'
            '${if type_of(x.value) == "map" { x.value.a } else { type_of(x.value) }}`)).register("%s"%s)',
}
RECORD_NO_VALUE = {
    "python": "GB().foreach(lambda x: execute('set', '{' + x['key'] + '}:rec', str(x))).register('%s'%s)",
    "lua": "GB():foreach(function(x) execute('set', '{' .. x.key .. '}:rec', x.key .. '/' .. x.event .. '/' "
           ".. tostring(x.type) .. '/' .. tostring(x.value)) end):register('%s'%s)",
    "rhai": 'GB().foreach(|x| execute("set", "{" + x.key + "}:rec", `${x.key}/${x.event}/${type_of(x.value)}`))'
            '.register("%s"%s)',
}
RECORD_EXPECTED = {
    "python": lambda k: "{'event': 'hset', 'key': '%s', 'type': 'hash', 'value': {'a': '1'}}" % k,
    "lua": lambda k: "%s/hset/hash/1" % k,
    "rhai": lambda k: "%s/hset/hash/1" % k,
}
RECORD_NO_VALUE_EXPECTED = {
    "python": lambda k: "{'event': 'set', 'key': '%s'}" % k,
    "lua": lambda k: "%s/set/nil/nil" % k,
    "rhai": lambda k: "%s/set/()" % k,
}
for language in LANGUAGES:
    ks = keys("rec:")

    def act(env, ks=ks):
        for k in ks:
            env.data.hset(k, "a", "1")
    add("record", language, [(RECORD[language] % ("rec:*", options(language, {})),)], act,
        counts(ks, ":rec"), (None, [RECORD_EXPECTED[language](k) for k in ks]), ks)
    ks = keys("rv:")
    add("readValue=False", language,
        [(RECORD_NO_VALUE[language] % ("rv:*", options(language, {"readValue": False})),)],
        set_all(ks), counts(ks, ":rec"), (None, [RECORD_NO_VALUE_EXPECTED[language](k) for k in ks]), ks)

# glob=True (Gears only), Python.
ks = ["g:%d:p" % i for i in range(6)]
add("glob", "python", [(counter("python", "g:*:p", glob=True, mode="sync"),)],
    set_all(ks + ["g:1:q"]), counts(ks + ["g:1:q"]), (None, ["1"] * 6 + [None]), ks, wait=False)

# The seed's chained audit example, one audit stream per audited key (its hash tag keeps it on
# the key's shard): keys -> {<key>}:audit stream -> {<key>}:audit:counts.
AUDIT = {
    "python": ["GearsBuilder().filter(lambda x: x['key'].startswith('audited-'))"
               ".foreach(lambda x: execute('xadd', '{' + x['key'] + '}:audit', '*', 'key', x['key'])).register()",
               "GearsBuilder('StreamReader').foreach(lambda x: execute('zadd', x['key'] + ':counts', '1', "
               "x['value']['key'])).register('{audited-*')"],
    "lua": ["GB():filter(function(x) return x.key:sub(1, 8) == 'audited-' end)"
            ":foreach(function(x) execute('xadd', '{' .. x.key .. '}:audit', '*', 'key', x.key) end):register()",
            "GB('StreamReader'):foreach(function(x) execute('zadd', x.key .. ':counts', '1', x.value.key) end)"
            ":register('{audited-*')"],
    "rhai": ['GB().filter(|x| x.key.starts_with("audited-"))'
             '.foreach(|x| execute("xadd", "{" + x.key + "}:audit", "*", "key", x.key)).register()',
             'GB("StreamReader").foreach(|x| execute("zadd", x.key + ":counts", "1", x.value.key))'
             '.register("{audited-*")'],
}
for language in LANGUAGES:
    ks = keys("audited-")

    def act(env, ks=ks):
        for k in ks:
            env.data.set(k, "a")
        env.data.hset("audited-h", "f", "v")
        env.data.set("plain", "b")

    def observe(env, ks=ks):
        return ([(env.data.zrange("{%s}:audit:counts" % k, 0, -1, withscores=True),
                  env.data.xlen("{%s}:audit" % k)) for k in ks + ["audited-h"]],
                env.data.exists("{plain}:audit"))
    add("audit-chain", language, [(s,) for s in AUDIT[language]], act, observe,
        (None, ([([(k, 1.0)], 0) for k in ks + ["audited-h"]], 0)), ks)

# StreamReader: entries of several streams, each counted on its stream's shard, then trimmed.
def xadd_all(streams, entries=3):
    def act(env):
        for n in range(entries):
            for k in streams:
                env.data.xadd(k, {"f": str(n)})
    return act


def stream_state(streams, *more):
    return lambda env: (counts(streams)(env), [env.data.xlen(k) for k in streams]) + tuple(f(env) for f in more)


for language in LANGUAGES:
    ks = keys("st:")
    add("streams", language, [(counter(language, "st:*", reader="StreamReader"),)],
        xadd_all(ks), stream_state(ks), (None, (["3"] * 6, [0] * 6)), ks, timeout=3)
    # batch=3: one run per stream.
    ks = keys("sb:")
    add("streams-batch", language, [(counter(language, "sb:*", reader="StreamReader", batch=3),)],
        xadd_all(ks), stream_state(ks, lambda env: stats(env, "numTriggered")),
        (None, (["3"] * 6, [0] * 6, 6)), ks, timeout=3)

# CommandReader triggers: a trigger registered on one master answers the same on every master.
ECHO = {
    "python": "GB('CommandReader').map(lambda x: x).register(trigger='echo', mode='%s')",
    "lua": "GB('CommandReader'):map(function(x) return x end):register({trigger = 'echo', mode = '%s'})",
    "rhai": 'GB("CommandReader").map(|x| x).register(#{trigger: "echo", mode: "%s"})',
}
for language in LANGUAGES:
    for mode in ["sync", "async", "async_local"]:
        add("trigger-" + mode, language, [(ECHO[language] % mode,)],
            lambda env: agreed([n.execute_command("RG.TRIGGER", "echo", "a", "b") for n in env.nodes]),
            lambda env: agreed([n.execute_command("RG.TRIGGER", "echo") for n in env.nodes]),
            (["['echo', 'a', 'b']"], ["['echo']"]), [], wait=False)

# RG.TRIGGERONKEY declares its key: the cluster client sends it to the key's shard, where the
# trigger may write it.
PUT = {
    "python": "GB('CommandReader').foreach(lambda x: execute('SET', x[1], x[2])).map(lambda x: 'done')"
              ".register(trigger='put', mode='%s')",
    "lua": "GB('CommandReader'):foreach(function(x) execute('SET', x[2], x[3]) end)"
           ":map(function(x) return 'done' end):register({trigger = 'put', mode = '%s'})",
    "rhai": 'GB("CommandReader").foreach(|x| execute("SET", x[1], x[2])).map(|x| "done")'
            '.register(#{trigger: "put", mode: "%s"})',
}
for language in LANGUAGES:
    for mode in ["sync", "async"]:
        ks = keys("p:")
        add("triggeronkey-" + mode, language, [(PUT[language] % mode,)],
            lambda env, ks=ks: [env.data.execute_command("RG.TRIGGERONKEY", "put", k, "v" + k) for k in ks],
            lambda env, ks=ks: [env.data.get(k) for k in ks],
            ([["done"]] * 6, ["v" + k for k in ks]), ks, wait=False)

# A hook on HSET: it logs the command, then runs it with call_next; called through the cluster
# client on keys of every shard.
HOOK = {
    "python": "def h(x):\n    execute('RPUSH', '{' + x[1] + '}:seen', x[0])\n    return call_next(*x[1:])\n"
              "GB('CommandReader').map(h).register(hook='hset', mode='sync', convertToStr=False)",
    "lua": "GB('CommandReader'):map(function(x) execute('RPUSH', '{' .. x[2] .. '}:seen', x[1]) "
           "return call_next(table.unpack(x, 2)) end)"
           ":register({hook = 'hset', mode = 'sync', convertToStr = false})",
    "rhai": 'GB("CommandReader").map(|x| { execute("RPUSH", "{" + x[1] + "}:seen", x[0]); x.remove(0); call_next(x) })'
            '.register(#{hook: "hset", mode: "sync", convertToStr: false})',
}
for language in LANGUAGES:
    ks = keys("h:")
    add("hook-call_next", language, [(HOOK[language],)],
        lambda env, ks=ks: [env.data.hset(k, mapping={"a": "1", "b": "2"}) for k in ks],
        lambda env, ks=ks: [(env.data.hgetall(k), env.data.lrange("{%s}:seen" % k, 0, -1)) for k in ks],
        ([2] * 6, [({"a": "1", "b": "2"}, ["HSET"])] * 6), ks, wait=False)

# A hook by key prefix that answers instead of the command.
REPLACE = {
    "python": "GB('CommandReader').map(lambda x: 'hooked').register(hook='hset', keyprefix='user:', mode='sync')",
    "lua": "GB('CommandReader'):map(function(x) return 'hooked' end)"
           ":register({hook = 'hset', keyprefix = 'user:', mode = 'sync'})",
    "rhai": 'GB("CommandReader").map(|x| "hooked").register(#{hook: "hset", keyprefix: "user:", mode: "sync"})',
}
for language in LANGUAGES:
    ks = keys("user:")
    plain = keys("plain:")
    add("hook-keyprefix", language, [(REPLACE[language],)],
        lambda env, ks=ks, plain=plain: [env.data.hset(k, "f", "v") for k in ks + plain],
        lambda env, ks=ks, plain=plain: [env.data.hget(k, "f") for k in ks + plain],
        (["hooked"] * 6 + [1] * 6, [None] * 6 + ["v"] * 6), ks + plain, wait=False)

# keymiss + commands=['get'] + override_reply: the read-through cache.
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
for language in LANGUAGES:
    for mode in ["sync", "async", "async_local"]:
        ks = keys("cache:")
        add("read-through-cache-" + mode, language, [(CACHE[language] % mode,)],
            lambda env, ks=ks: ([env.data.get(k) for k in ks], [env.data.get(k) for k in ks],
                                env.data.get("nocache:1")),
            lambda env: stats(env, "numSuccess"),
            ((["fetched:" + k for k in ks],) * 2 + (None,), 6), ks, wait=False)

# override_reply with get_command() on a keymiss of any key.
ks = keys("miss:")
add("get_command", "python",
    [("GB().foreach(lambda x: override_reply(' '.join(get_command())))"
      ".register(prefix='*', eventTypes=['keymiss'], commands=['get'], mode='sync')",)],
    lambda env, ks=ks: [env.data.get(k) for k in ks], lambda env: None,
    (["GET " + k for k in ks], None), ks, wait=False)


# An async hook: the command's client waits for the run on a worker.
ASYNC_HOOK = {
    "python": "GB('CommandReader').map(lambda x: call_next(*x[1:])).register(hook='incrby', mode='%s', convertToStr=False)",
    "lua": "GB('CommandReader'):map(function(x) return call_next(table.unpack(x, 2)) end)"
           ":register({hook = 'incrby', mode = '%s', convertToStr = false})",
    "rhai": 'GB("CommandReader").map(|x| { x.remove(0); call_next(x) })'
            '.register(#{hook: "incrby", mode: "%s", convertToStr: false})',
}
for language in LANGUAGES:
    for mode in ["async", "async_local"]:
        ks = keys("ah:")
        add("hook-" + mode, language, [(ASYNC_HOOK[language] % mode,)],
            lambda env, ks=ks: [env.data.incrby(k, 2) for k in ks] + [env.data.incrby(k, 3) for k in ks],
            lambda env, ks=ks: [env.data.get(k) for k in ks],
            ([2] * 6 + [5] * 6, ["5"] * 6), ks, wait=False)

# A trigger whose pipeline aggregates: the run's reply is the trigger's record, counted.
COUNTBY = {
    "python": "GB('CommandReader').flatmap(lambda x: x[1:]).countby(lambda x: x).register(trigger='cnt', mode='%s')",
    "lua": "GB('CommandReader'):flatmap(function(x) return {table.unpack(x, 2)} end)"
           ":countby(function(x) return x end):register({trigger = 'cnt', mode = '%s'})",
    "rhai": 'GB("CommandReader").flatmap(|x| { x.remove(0); x }).countby(|x| x)'
            '.register(#{trigger: "cnt", mode: "%s"})',
}
for language in LANGUAGES:
    for mode in ["sync", "async"]:
        add("trigger-countby-" + mode, language, [(COUNTBY[language] % mode,)],
            lambda env: agreed([sorted(n.execute_command("RG.TRIGGER", "cnt", "a", "b", "a")) for n in env.nodes]),
            lambda env: None,
            (["{'key': 'a', 'value': 2}", "{'key': 'b', 'value': 1}"], None), [], wait=False)

# A registration that writes a key other than its event's: repartition by it first (the record
# then runs on the shard owning that key, docs/cluster.md). RedisGears 1.2 runs an `async`
# registration's execution across the cluster, repartition included (its
# testStreamReaderDuration, run on clusters, repartitions stream records to 'counter').
REPARTITION = {
    "python": "GB(%s).repartition(lambda x: %s).foreach(lambda x: execute('incr', %s)).register('%s')",
    "lua": "GB(%s):repartition(function(x) return %s end):foreach(function(x) execute('incr', %s) end):register('%s')",
    "rhai": 'GB(%s).repartition(|x| %s).foreach(|x| execute("incr", %s)).register("%s")',
}
VALUE = {"python": "x['value']", "lua": "x.value", "rhai": "x.value"}
STREAM_TOTAL = {"python": "'total'", "lua": "'total'", "rhai": '"total"'}
STREAM_READER = {"python": "'StreamReader'", "lua": "'StreamReader'", "rhai": '"StreamReader"'}
for language in LANGUAGES:
    ks = keys("rp:")
    add("repartition", language,
        [(REPARTITION[language] % ("", VALUE[language], VALUE[language], "rp:*"),)],
        lambda env, ks=ks: [env.data.set(k, "total" if i % 2 else "sum") for i, k in enumerate(ks)],
        lambda env: (env.data.get("total"), env.data.get("sum"), stats(env, "numFailures")),
        ([True] * 6, ("3", "3", 0)), ks, timeout=2)
    ks = keys("sr:")
    add("stream-repartition", language,
        [(REPARTITION[language] % (STREAM_READER[language], STREAM_TOTAL[language], STREAM_TOTAL[language],
                                   "sr:*"),)],
        xadd_all(ks, 2), lambda env: (env.data.get("total"), stats(env, "numFailures")),
        (None, ("12", 0)), ks, timeout=2)

# expired events fire on the shard where the key expires.
for language in LANGUAGES:
    ks = keys("ex:")
    add("expired", language, [(counter(language, "ex:*", eventTypes=["expired"]),)],
        lambda env, ks=ks: [env.data.set(k, "v", px=20) for k in ks],
        counts(ks), ([True] * 6, ["1"] * 6), ks)

# commands=[...]: a keyspace registration that runs only for the events of those commands.
COMMANDS = {
    "python": "GB().foreach(lambda x: execute('incr', '{' + x['key'] + '}:n')).register('cm:*', commands=['hset'], mode='sync')",
    "lua": "GB():foreach(function(x) execute('incr', '{' .. x.key .. '}:n') end)"
           ":register('cm:*', {commands = {'hset'}, mode = 'sync'})",
    "rhai": 'GB().foreach(|x| execute("incr", "{" + x.key + "}:n"))'
            '.register("cm:*", #{commands: ["hset"], mode: "sync"})',
}
for language in LANGUAGES:
    ks = keys("cm:")

    def act(env, ks=ks):
        for i, k in enumerate(ks):
            env.data.hset(k, "f", "v")
            env.data.hset(k, "g", "v")
            if i % 2:
                env.data.hdel(k, "g")
        return [env.data.hgetall(k) for k in ks]
    add("commands", language, [(COMMANDS[language],)], act, counts(ks),
        ([{"f": "v", "g": "v"}, {"f": "v"}] * 3, ["2"] * 6), ks, wait=False)

# RG.PAUSEREGISTRATIONS / RG.UNPAUSEREGISTRATIONS of a stream registration, sent to another
# master: nothing runs while paused, on any shard.
for language in LANGUAGES:
    ks = keys("ps:")

    def act(env, ks=ks):
        [rid] = [r[1] for r in env.admin.execute_command("RG.DUMPREGISTRATIONS")]
        paused = env.other.execute_command("RG.PAUSEREGISTRATIONS", rid)
        xadd_all(ks)(env)
        time.sleep(0.3)
        during = counts(ks)(env)
        statuses = sorted({dict(zip(r[7][0::2], r[7][1::2]))["status"]
                           for n in env.nodes for r in n.execute_command("RG.DUMPREGISTRATIONS")})
        unpaused = env.other.execute_command("RG.UNPAUSEREGISTRATIONS", rid)
        return paused, during, statuses, unpaused
    add("stream-pause", language, [(counter(language, "ps:*", reader="StreamReader"),)], act,
        stream_state(ks), (("OK", [None] * 6, ["PAUSED"], "OK"), (["3"] * 6, [0] * 6)), ks)


# RG.CLEARREGISTRATIONSSTATS sent to another master clears every master's statistics.
for language in LANGUAGES:
    ks = keys("cs:")

    def act(env, ks=ks):
        set_all(ks)(env)
        before = stats(env, "numTriggered")
        reply = env.other.execute_command("RG.CLEARREGISTRATIONSSTATS")
        return before, reply
    add("clearregistrationsstats", language, [(counter(language, "cs:*", mode="sync"),)], act,
        lambda env: (stats(env, "numTriggered"), stats(env, "numSuccess")), ((6, "OK"), (0, 0)), ks,
        wait=False)


# Sessions: an UPGRADE sent to another master replaces the session on every master.
def dumpsessions(env, command="RG.DUMPSESSIONS"):
    """The sessions, by ID (their registration ids: how many), if every master has the same
    sessions and registration ids."""
    def one(node):
        ids = sorted(r[1] for r in node.execute_command("RG.DUMPREGISTRATIONS"))
        sessions = []
        for session in node.execute_command(command):
            fields = dict(zip(session[0::2], session[1::2]))
            fields["registrations"] = len(fields["registrations"])
            sessions.append(sorted(fields.items()))
        return ids, sorted(sessions, key=lambda fields: dict(fields)["ID"])
    per_node = [one(n) for n in env.nodes]
    if any(p != per_node[0] for p in per_node):
        return "masters disagree", per_node
    return per_node[0][1]


def session_fields(sid, refs, language, description=None, python=False):
    fields = {"ID": sid, "sessionDescription": description, "refCount": refs, "linked": "primary",
              "dead": "false", "requirementInstallationNeeded": 0, "requirements": [],
              "registrations": refs}
    if not python:
        fields["language"] = language
    return sorted(fields.items())


for language in LANGUAGES:
    ks = keys("up:")

    def act(env, ks=ks, language=language):
        before = [env.data.set(k, "1") and env.data.get("{%s}:old" % k) for k in ks]
        reply = gears(env.other, language, counter(language, "up:*", ":new", mode="sync"), "ID", "s1", "UPGRADE",
                      "DESCRIPTION", "d2")
        after = [env.data.set(k, "2") and (env.data.get("{%s}:old" % k), env.data.get("{%s}:new" % k))
                 for k in ks]
        return before, reply, after
    add("session-upgrade", language,
        [(counter(language, "up:*", ":old", mode="sync"), "ID", "s1", "DESCRIPTION", "d")],
        act, dumpsessions,
        ((["1"] * 6, "OK", [("1", "1")] * 6), [session_fields("s1", 1, language, "d2")]), ks, wait=False)

# RG.UNREGISTER sent to another master reaches every master; the session ends everywhere.
for language in LANGUAGES:
    ks = keys("un:")

    def act(env, ks=ks, language=language):
        first = [env.data.set(k, "1") and env.data.get("{%s}:n" % k) for k in ks]
        [rid] = [r[1] for r in env.admin.execute_command("RG.DUMPREGISTRATIONS")]
        reply = env.other.execute_command("RG.UNREGISTER", rid)
        gone = wait_for(lambda: all(n.execute_command("RG.DUMPREGISTRATIONS") == [] for n in env.nodes),
                        timeout=5)
        second = [env.data.set(k, "2") and env.data.get("{%s}:n" % k) for k in ks]
        return first, reply, gone, second
    add("unregister", language,
        [(counter(language, "un:*", mode="sync"), "ID", "gone")],
        act, dumpsessions, ((["1"] * 6, "OK", True, ["1"] * 6), []), ks, wait=False)

# RG.PYDUMPSESSIONS / RG.DUMPSESSIONS / RG.DUMPREGISTRATIONS: the same on every master.
SESSIONS = [
    ("python", counter("python", "ds:*"), "ID", "py", "DESCRIPTION", "desc"),
    ("python", counter("python", "ds:*", ":a") + "\n" + counter("python", "ds:*", ":b"), "ID", "py2"),
    ("lua", counter("lua", "ds:*", ":c"), "ID", "lua"),
    ("rhai", counter("rhai", "ds:*", ":d"), "ID", "rhai"),
]


def register_sessions(env):
    return [gears(env.admin if i % 2 else env.other, language, script, *opts)
            for i, (language, script, *opts) in enumerate(SESSIONS)]


def registrations_shape(env):
    def one(node):
        return sorted((r[3], r[5], r[7][r[7].index("args") + 1][:2], r[9].split("'")[3])
                      for r in node.execute_command("RG.DUMPREGISTRATIONS"))
    return agreed([one(n) for n in env.nodes])


ks = keys("ds:")
add("dumpsessions", "python", [], register_sessions,
    both(lambda env: dumpsessions(env, "RG.PYDUMPSESSIONS"), dumpsessions, registrations_shape),
    (["OK"] * 4,
     ([session_fields("py", 1, "python", "desc", python=True), session_fields("py2", 2, "python", python=True)],
      [session_fields("lua", 1, "lua"), session_fields("py", 1, "python", "desc"),
       session_fields("py2", 2, "python"), session_fields("rhai", 1, "rhai")],
      sorted([("KeysReader", None, ["regex", "ds:*"], sid) for sid in ("py", "py2", "py2", "lua", "rhai")]))),
    ks, wait=False)


# --- The test -------------------------------------------------------------------------------

def play(env, sc):
    try:
        for script, *opts in sc.scripts:
            assert gears(env.admin, sc.language, script, *opts) == "OK", script
        acted = sc.act(env)
        if sc.wait:
            wait_for(lambda: sc.observe(env) == sc.expected[1], timeout=sc.timeout)
            time.sleep(SETTLE)
        return acted, sc.observe(env)
    finally:
        env.clean()


@pytest.mark.parametrize("sc", SCENARIOS)
def test_one_and_three_shards_give_the_same_outcome(single, cluster, sc, request):
    index = request.node.callspec.indices["sc"]
    one = play(single(index), sc)
    assert one == sc.expected, "one instance"
    env = cluster(index)
    # The scenario's keys live on every shard.
    if sc.keys:
        assert len({env.owner(k) for k in sc.keys}) == 3
    three = play(env, sc)
    if three != one:
        raise ClusterDiffers("three shards: %r\none instance: %r" % (three, one))
