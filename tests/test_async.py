"""async/await and futures in Python callbacks (RedisGears 1.2's async API): coroutines run on
Gears' asyncio loop and the record waits for them; gearsFuture() with continueRun and
continueFailed; createFuture / setFutureResults / setFutureException; runCoroutine;
isAsyncAllow; RedisGears 1.2's errors."""
import threading
import time

from helpers import gears, gears_error, py_error, wait_for

SLEEPY = "import asyncio\nasync def c(x):\n    await asyncio.sleep(0.1)\n    return x\n"


def test_async_callbacks_in_every_step_that_takes_them(rr):
    # RedisGears 1.2's testAsyncAwait.
    assert gears(rr, "python", SLEEPY + "GB('ShardsIDReader').map(c).flatmap(c).foreach(c)"
                 ".filter(c).count().run()") == [["1"], []]


def test_coroutines_of_one_batch_run_concurrently_and_reach_their_execution(rr):
    for i in range(20):
        rr.set("ak:%d" % i, i)
    started = time.time()
    reply = gears(rr, "python",
                  "import asyncio\n"
                  "async def slow(x):\n"
                  "    await asyncio.sleep(0.5)\n"
                  "    execute('incr', 'async:count')\n"
                  "    return int(x['value'])\n"
                  "GB().map(slow).run('ak:*')")
    elapsed = time.time() - started
    assert sorted(int(v) for v in reply[0]) == list(range(20)) and reply[1] == []
    # One after the other they would take 10 s.
    assert elapsed < 5, elapsed
    assert rr.get("async:count") == "20"


def test_accumulate_and_aggregate_await(rr):
    for i in range(5):
        rr.set("acc:%d" % i, i)
    assert gears(rr, "python",
                 "import asyncio\n"
                 "async def add(a, x):\n"
                 "    await asyncio.sleep(0.01)\n"
                 "    return (a or 0) + int(x['value'])\n"
                 "GB().accumulate(add).run('acc:*')") == [["10"], []]
    assert gears(rr, "python",
                 "import asyncio\n"
                 "async def seq(a, x):\n"
                 "    await asyncio.sleep(0.01)\n"
                 "    return a + int(x['value'])\n"
                 "GB().aggregate(0, seq, lambda a, b: a + b).run('acc:*')") == [["10"], []]


def test_errors_of_coroutines(rr):
    rr.set("e:1", "1")
    # An exception in a coroutine: its text, no traceback (RedisGears 1.2).
    assert gears(rr, "python", "async def f(x):\n    raise Exception('failed')\n"
                 "GB('ShardsIDReader').map(f).run()") == [[], ["failed"]]
    assert gears(rr, "python",
                 "import asyncio\n"
                 "async def f(x):\n"
                 "    with atomic():\n"
                 "        await asyncio.sleep(0.01)\n"
                 "    return x\n"
                 "GB('ShardsIDReader').map(f).run()") == [[], ["await is not allow inside atomic block"]]
    assert gears(rr, "python", "async def k(x):\n    return 'k'\n"
                 "GB().groupby(k, lambda k, a, r: 1).run('e:*')") == \
        [[], ["coroutine are not allow on extractor"]]
    assert gears(rr, "python", "async def red(k, l):\n    return 1\n"
                 "GB().batchgroupby(lambda x: 'k', red).run('e:*')") == \
        [[], ["coroutine are not allow on reduce"]]
    # The server goes on.
    assert rr.ping()


def test_gears_future_continued_by_another_execution(rr, server):
    gears(rr, "python",
          "fs = []\n"
          "def block(x):\n"
          "    f = gearsFuture()\n"
          "    fs.append(f)\n"
          "    return f\n"
          "def unblock(x):\n"
          "    f = fs.pop()\n"
          "    f.continueRun(x[1])\n"
          "    return 'unblocked'\n"
          "def fail(x):\n"
          "    fs.pop().continueFailed('it failed')\n"
          "    return 'failed'\n"
          "GB('CommandReader').map(block).register(trigger='block', mode='async_local')\n"
          "GB('CommandReader').map(unblock).register(trigger='unblock', mode='async_local')\n"
          "GB('CommandReader').map(fail).register(trigger='fail', mode='async_local')",
          "ID", "futures")
    client = server.new_client(decode_responses=True)
    result = []
    t = threading.Thread(target=lambda: result.append(client.execute_command("RG.TRIGGER", "block")))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()
    assert rr.execute_command("RG.TRIGGER", "unblock", "value") == ["unblocked"]
    t.join(5)
    assert result == [["value"]]
    # continueFailed: the record's error.
    result.clear()
    t = threading.Thread(target=lambda: result.append(
        gears_trigger_error(client, "block")))
    t.start()
    time.sleep(0.3)
    assert rr.execute_command("RG.TRIGGER", "fail") == ["failed"]
    t.join(5)
    assert result == ["it failed"]


def gears_trigger_error(client, trigger):
    try:
        return client.execute_command("RG.TRIGGER", trigger)
    except Exception as e:
        return str(e)


def test_gears_future_errors(rr):
    rr.set("gf:1", "1")
    assert gears_error(rr, "python", "gearsFuture()") == \
        py_error("<module>", "gears.error: Future object can only be created inside certain execution steps")
    assert gears(rr, "python", "def f(x):\n    gearsFuture()\n    return gearsFuture()\n"
                 "GB('ShardsIDReader').map(f).run()")[1] == \
        [py_error("f", "gears.error: Can not create async record twice on the same step", 3)]
    [error] = gears(rr, "python", "def f(x):\n    g = gearsFuture()\n    g.continueRun(1)\n    return g\n"
                    "GB('ShardsIDReader').map(f).run()")[1]
    assert error.endswith("'gears.error: Can not handle future untill it returned from the callback\\n']")
    assert gears(rr, "python", "def k(x):\n    return gearsFuture()\n"
                 "GB().groupby(k, lambda k, a, r: 1).run('gf:*')")[1] == \
        [py_error("k", "gears.error: Step does not support async", 2)]
    # Returned and dropped without a continue: the record fails, nothing hangs.
    assert gears(rr, "python", "def f(x):\n    return gearsFuture()\n"
                 "GB('ShardsIDReader').map(f).run()") == [[], ["Async record did not called continue"]]
    # Created but not returned: the callback's own value counts.
    assert gears(rr, "python", "def f(x):\n    gearsFuture()\n    return 'own'\n"
                 "GB('ShardsIDReader').map(f).run()") == [["own"], []]
    assert gears(rr, "python", "def f(x):\n    return isAsyncAllow()\n"
                 "GB('ShardsIDReader').map(f).run()") == [["True"], []]
    assert gears(rr, "python", "GB('ShardsIDReader').map(lambda x: str(isAsyncAllow())).run()\n"
                 "assert not isAsyncAllow()") == [["True"], []]


def test_publish_consume_with_create_future(rr, server):
    # RedisGears 1.2's documentation example (publish/consume), with createFuture and
    # setFutureResults; and its timeout variant with runCoroutine and setFutureException.
    gears(rr, "python",
          "import asyncio, threading\n"
          "publishers = []\n"
          "lock = threading.Lock()\n"
          "async def consume(x):\n"
          "    f = createFuture()\n"
          "    with lock:\n"
          "        publishers.append(f)\n"
          "    return await f\n"
          "def publish(x):\n"
          "    with lock:\n"
          "        f = publishers.pop()\n"
          "    setFutureResults(f, x[1])\n"
          "    return 'OK'\n"
          "async def timeout(f):\n"
          "    with lock:\n"
          "        publishers.remove(f)\n"
          "    setFutureException(f, 'timedout')\n"
          "async def consume_or_timeout(x):\n"
          "    f = createFuture()\n"
          "    with lock:\n"
          "        publishers.append(f)\n"
          "    runCoroutine(timeout(f), delay=0.5)\n"
          "    return await f\n"
          "GB('CommandReader').map(consume).register(trigger='MSG_CONSUME', mode='async_local')\n"
          "GB('CommandReader').map(publish).register(trigger='MSG_PUBLISH', mode='async_local')\n"
          "GB('CommandReader').map(consume_or_timeout).register(trigger='MSG_CONSUME1', mode='async_local')",
          "ID", "pubsub")
    client = server.new_client(decode_responses=True)
    result = []
    t = threading.Thread(target=lambda: result.append(client.execute_command("RG.TRIGGER", "MSG_CONSUME")))
    t.start()
    # The consumer waits for its future.
    time.sleep(0.5)
    assert t.is_alive()
    assert rr.execute_command("RG.TRIGGER", "MSG_PUBLISH", "this is a message") == ["OK"]
    t.join(5)
    assert result == [["this is a message"]]
    started = time.time()
    assert gears_trigger_error(rr, "MSG_CONSUME1") == "timedout"
    assert 0.4 < time.time() - started < 5


def test_abort_while_a_coroutine_waits(rr):
    execution = rr.execute_command(
        "RG.PYEXECUTE", "import asyncio\nasync def f(x):\n    await asyncio.sleep(60)\n"
        "GB('ShardsIDReader').map(f).run()", "UNBLOCKING")
    time.sleep(0.3)
    started = time.time()
    assert rr.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    assert wait_for(lambda: dict(zip(*[iter(rr.execute_command("RG.GETEXECUTION", execution)[0][3][:2])] * 2))
                    .get("status") == "aborted", timeout=5)
    assert time.time() - started < 5


def test_where_nothing_may_wait(rr):
    # Inside MULTI a sync run can not move to the background: a coroutine there is refused, with
    # RedisGears 1.2's text (raised with no traceback).
    gears(rr, "python", "async def f(x):\n    return x\n"
          "GB('CommandReader').map(f).register(trigger='syncasync', mode='sync')", "ID", "sync")
    pipe = rr.pipeline(transaction=True)
    pipe.execute_command("RG.TRIGGER", "syncasync")
    [error] = pipe.execute(raise_on_error=False)
    assert str(error) == \
        "Error type: <class 'gears.error'>, Value: Creating async record is not allowed"
    assert gears(rr, "python", "def f(x):\n    return str(isAsyncAllow())\n"
                 "GB('CommandReader').map(f).register(trigger='syncallow', mode='sync')") == "OK"
    assert rr.execute_command("RG.TRIGGER", "syncallow") == ["False"]


# RedisGears 1.2's documentation: "Waiting for another execution" (async_local) and "Async
# Await on Sync executions" (sync: only a cache miss goes to the background).
COUNT_STUDENTS = """
async def CountStudents(r):
    c = execute('get', 's_count{%s}' % hashtag())
    if c:
        return c
    c = await GB().count().run(prefix='student:*')
    if len(c[1]) > 0:
        return c[1]
    if len(c[0]) == 0:
        c = 0
    else:
        c = c[0][0]
    execute('set', 's_count{%s}' % hashtag(), c, 'EX', '5')
    return c

GB('CommandReader').map(CountStudents).register(trigger='COUNT_STUDENTS', mode='async_local')
"""

COUNT_STUDENTS_SYNC = """
async def AsyncCountStudents():
    c = await GB().count().run(prefix='student:*')
    if len(c[1]) > 0:
        return c[1]
    if len(c[0]) == 0:
        c = 0
    else:
        c = c[0][0]
    execute('set', 's_count{%s}' % hashtag(), c, 'EX', '5')
    return c

def CountStudents(r):
    c = execute('get', 's_count{%s}' % hashtag())
    if c:
        return c
    return AsyncCountStudents()

GB('CommandReader').map(CountStudents).register(trigger='COUNT_STUDENTS1', mode='sync')
"""


def test_count_students_awaits_another_execution(rr):
    for i in range(7):
        rr.set("student:%d" % i, i)
    rr.set("teacher:1", "t")
    assert gears(rr, "python", COUNT_STUDENTS) == "OK"
    assert rr.execute_command("RG.TRIGGER", "COUNT_STUDENTS") == ["7"]
    assert rr.get("s_count{06S}") == "7"
    assert rr.execute_command("RG.TRIGGER", "COUNT_STUDENTS") == ["7"]
    # The inner run was an execution of its own, listed like any other (with the script's
    # run and the two registered runs).
    listed = rr.execute_command("RG.DUMPEXECUTIONS")
    assert sorted(e[5] for e in listed) == [0, 0, 1, 1]


def test_a_sync_run_that_awaits_moves_to_the_background(rr):
    for i in range(4):
        rr.set("student:%d" % i, i)
    assert gears(rr, "python", COUNT_STUDENTS_SYNC) == "OK"
    # A cache miss awaits: the run starts again on a worker; the client gets its reply then.
    assert rr.execute_command("RG.TRIGGER", "COUNT_STUDENTS1") == ["4"]
    assert rr.get("s_count{06S}") == "4"
    # A hit stays sync.
    assert rr.execute_command("RG.TRIGGER", "COUNT_STUDENTS1") == ["4"]
    [registration] = rr.execute_command("RG.DUMPREGISTRATIONS")
    data = registration[7]
    # Two runs, both successful: the attempt that moved is not a run.
    assert data[data.index("numTriggered") + 1] == 2
    assert data[data.index("numSuccess") + 1] == 2
    # Inside MULTI it can not move.
    rr.delete("s_count{06S}")
    pipe = rr.pipeline(transaction=True)
    pipe.execute_command("RG.TRIGGER", "COUNT_STUDENTS1")
    [error] = pipe.execute(raise_on_error=False)
    assert str(error) == \
        "Error type: <class 'gears.error'>, Value: Creating async record is not allowed"


def test_a_sync_run_that_wrote_before_it_awaits_does_not_start_again(rr):
    script = ("import asyncio\nasync def later(x):\n    await asyncio.sleep(0.01)\n"
              "    return 'late'\ndef f(x):\n    execute('incr', 'w')\n    return later(x)\n"
              "GB('CommandReader').map(f).register(trigger='W', mode='sync')")
    assert gears(rr, "python", script) == "OK"
    assert gears_trigger_error(rr, "W") == (
        "Error type: <class 'gears.error'>, Value: Creating async record is not allowed: the "
        "sync run wrote before it awaited, so it can not start again in the background")
    assert rr.get("w") == "1"


def test_a_sync_run_that_started_a_run_does_not_start_again(rr):
    # Its run() already started an execution: starting again would start a second one.
    script = ("async def wait(fut):\n    return str(await fut)\n"
              "def f(x):\n    fut = GB().foreach(lambda r: execute('incr', 'x')).run('x')\n"
              "    return wait(fut)\n"
              "GB('CommandReader').map(f).register(trigger='DBL', mode='sync')")
    rr.set("x", "0")
    assert gears(rr, "python", script) == "OK"
    assert gears_trigger_error(rr, "DBL") == (
        "Error type: <class 'gears.error'>, Value: Creating async record is not allowed: the "
        "sync run wrote before it awaited, so it can not start again in the background")
    assert wait_for(lambda: rr.get("x") == "1")
    time.sleep(0.2)
    assert rr.get("x") == "1"


def test_a_sync_keyspace_run_inside_a_transaction_does_not_move(rr, server):
    script = ("import asyncio\nasync def f(x):\n    await asyncio.sleep(0.01)\n"
              "    execute('incr', 'runs')\n"
              "GB().foreach(f).register(prefix='t:*', mode='sync')")
    assert gears(rr, "python", script) == "OK"
    pipe = rr.pipeline(transaction=True)
    pipe.set("t:1", "a")
    pipe.set("t:2", "b")
    pipe.execute()
    data = lambda: rr.execute_command("RG.DUMPREGISTRATIONS")[0][7]
    if server.kind[0] == "redis" and server.kind[1] < (7, 2):
        # Redis 7.0 runs it inside the transaction: it can not move (RedisGears 1.2's error).
        assert wait_for(lambda: data()[data().index("numFailures") + 1] == 2)
        assert data()[data().index("lastError") + 1] == \
            "Error type: <class 'gears.error'>, Value: Creating async record is not allowed"
        assert rr.get("runs") is None
    else:
        # A post-notification job runs after EXEC: it moves, and each event runs once.
        assert wait_for(lambda: rr.get("runs") == "2")
        time.sleep(0.2)
        assert rr.get("runs") == "2"


def test_a_sync_keyspace_registration_that_awaits_runs_on_a_worker(rr, server):
    script = ("import asyncio\nasync def f(x):\n    await asyncio.sleep(0.01)\n"
              "    execute('set', 'seen:' + x['key'], x['value'])\n"
              "GB().foreach(f).register(prefix='k:*', mode='sync')")
    assert gears(rr, "python", script) == "OK"
    rr.set("k:1", "v1")
    assert wait_for(lambda: rr.get("seen:k:1") == "v1")

    def counts():
        data = rr.execute_command("RG.DUMPREGISTRATIONS")[0][7]
        return [data[data.index(name) + 1] for name in ("numTriggered", "numSuccess",
                                                        "numFailures")]
    # Counted once its run ends (after its write).
    assert wait_for(lambda: counts() == [1, 1, 0])


def test_run_inside_a_step_returns_a_future_of_its_results(rr):
    for i in range(3):
        rr.set("n:%d" % i, i)
    script = ("async def f(x):\n    res = await GB().map(lambda r: r['key']).sort().run('n:*')\n"
              "    return str(res)\nGB('ShardsIDReader').map(f).run()")
    assert gears(rr, "python", script) == [["[['n:0', 'n:1', 'n:2'], []]"], []]
    errors = ("async def f(x):\n    res = await GB().map(lambda r: 1 / 0).run('n:*')\n"
              "    return str(len(res[1]))\nGB('ShardsIDReader').map(f).run()")
    assert gears(rr, "python", errors) == [["3"], []]
    # Not awaited, it runs all the same (RedisGears 1.2's time event example).
    rr.set("x", "1")
    te = ("def func(x):\n    execute('incr', x['key'])\n"
          "def OnTime():\n    GB().foreach(func).run('x')\n"
          "registerTE(1, OnTime, 'key1')")
    assert gears(rr, "python", te) == "OK"
    assert wait_for(lambda: int(rr.get("x")) >= 3, timeout=5)


def test_limits_stop_a_coroutine_and_the_loop_survives_what_a_script_does_to_it(rr):
    # A coroutine that spins inside an atomic block holds the Redis lock: AtomicBlockMaxTime
    # stops it as it stops a plain callback (it froze the server).
    rr.execute_command("RG.CONFIGSET", "AtomicBlockMaxTime", "500")
    try:
        started = time.time()
        reply = gears(rr, "python", "async def f(x):\n    with atomic():\n"
                      "        execute('set', 'spun', '1')\n        while True:\n            pass\n"
                      "GB('ShardsIDReader').map(f).run()")
        assert reply[0] == [] and reply[1][0].startswith(
            "BUSY the atomic block ran longer than 500 ms (AtomicBlockMaxTime)")
        assert time.time() - started < 5
        assert rr.ping()
    finally:
        rr.execute_command("RG.CONFIGSET", "AtomicBlockMaxTime", "5000")
    ok = SLEEPY + "GB('ShardsIDReader').map(c).run()"
    # What a coroutine may do to the loop does not end it for the others.
    for bad in ["raise SystemExit(3)", "raise KeyboardInterrupt()",
                "asyncio.get_running_loop().stop()"]:
        gears(rr, "python", "import asyncio\nasync def f(x):\n    %s\n    return 1\n"
              "GB('ShardsIDReader').map(f).run()" % bad)
        assert gears(rr, "python", ok)[1] == []
    assert gears(rr, "python", "async def f(x):\n    raise SystemExit(3)\n"
                 "GB('ShardsIDReader').map(f).run()") == [[], ["SystemExit: 3"]]
    assert gears(rr, "python", "async def f(x):\n    raise GeneratorExit()\n"
                 "GB('ShardsIDReader').map(f).run()") == [[], ["GeneratorExit"]]
