"""Executions as objects: ids, UNBLOCKING, results, listing, inspection, abort and drop, with
RedisGears 1.2's replies and errors; the queue of executions waiting for a worker; clients that
go away; who may see an execution."""
import re
import socket
import threading
import time

import pytest
import redis

from conftest import RedisServer
from helpers import _encode, gears, gears_error, raw_error, raw_reply

ID = re.compile(r"^0{40}-[0-9]+$")
ABORTED = "Execution was aborted"
ABORTED_REPLY = [[], [ABORTED]]
CLIENT_GONE = "Execution was aborted: its client disconnected before the reply"

# A loop that never ends unless the execution is stopped, per language.
LOOPS = {
    "python": "GB('ShardsIDReader').map(lambda x: [1 for _ in iter(int, 1)]).run()",
    "python-sleep": ("import time\n"
                     "def f(x):\n"
                     "    while True:\n"
                     "        time.sleep(0.5)\n"
                     "GB('ShardsIDReader').foreach(f).run()"),
    "lua": "GB('ShardsIDReader'):map(function(x) while true do end end):run()",
    # A pattern that backtracks exponentially: the matching runs in string.find, not in Lua code.
    "lua-pattern": "GB('ShardsIDReader'):map(function(x) return string.find(string.rep('a', 40), "
                   "string.rep('a*', 40) .. 'b') end):run()",
    "rhai": "GB(\"ShardsIDReader\").map(|x| { loop {} }).run();",
}


COUNT = {
    "python": "GB('ShardsIDReader').count().run()",
    "lua": "GB('ShardsIDReader'):count():run()",
    "rhai": 'GB("ShardsIDReader").count().run();',
}


def language_of(loop):
    return loop.split("-")[0]


@pytest.fixture(scope="module")
def server():
    # ExecutionThreads 3 (the default) is what the queue tests count on.
    s = RedisServer(extra_args=("ExecutionThreads", "3"))
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died during the tests:\n" + log


@pytest.fixture(autouse=True)
def clean(server):
    """Each test starts and ends with no execution: left-overs are aborted and dropped."""
    yield
    client = server.new_client()
    for _ in range(2):
        for entry in client.execute_command("RG.DUMPEXECUTIONS"):
            client.execute_command("RG.ABORTEXECUTION", entry[1])
        deadline = time.time() + 5
        while time.time() < deadline and any(
                e[3] not in ("done", "aborted") for e in client.execute_command("RG.DUMPEXECUTIONS")):
            time.sleep(0.01)
        for entry in client.execute_command("RG.DUMPEXECUTIONS"):
            client.execute_command("RG.DROPEXECUTION", entry[1])
    assert client.execute_command("RG.DUMPEXECUTIONS") == []
    assert client.info("rg")["rg_workers_busy"] == 0


def status(r, execution):
    for entry in r.execute_command("RG.DUMPEXECUTIONS"):
        if entry[1] == execution:
            return entry[3]
    return None


def wait_status(r, execution, wanted, timeout=5):
    deadline = time.time() + timeout
    while status(r, execution) != wanted:
        assert time.time() < deadline, "execution %s is %s, not %s" % (
            execution, status(r, execution), wanted)
        time.sleep(0.005)


def start(r, loop):
    """Starts a runaway loop UNBLOCKING; returns its id once it runs."""
    execution = gears(r, language_of(loop), LOOPS[loop], "UNBLOCKING")
    wait_status(r, execution, "running")
    return execution


@pytest.mark.parametrize("language, script", [
    ("python", "GB().map(lambda x: x['key']).run()"),
    ("lua", "GB():map(function(x) return x.key end):run()"),
    ("rhai", "GB().map(|x| x.key).run();"),
])
def test_unblocking_replies_an_id_and_keeps_the_results(r, language, script):
    r.set("a", "1")
    execution = gears(r, language, script, "UNBLOCKING")
    assert ID.match(execution)
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == [["a"], []]
    assert r.execute_command("RG.GETRESULTS", execution) == [["a"], []]
    assert r.execute_command("RG.DUMPEXECUTIONS") == [
        ["executionId", execution, "status", "done", "registered", 0]]
    assert r.execute_command("RG.DROPEXECUTION", execution) == "OK"
    assert r.execute_command("RG.DUMPEXECUTIONS") == []
    assert raw_error(r, "RG.GETRESULTS", execution) == "execution plan does not exist"


def test_ids_count_up_and_blocking_executions_are_dropped_after_they_reply(r):
    first = gears(r, "lua", "GB('ShardsIDReader'):run()", "UNBLOCKING")
    assert gears(r, "lua", "GB('ShardsIDReader'):count():run()") == [["1"], []]
    third = gears(r, "rhai", 'GB("ShardsIDReader").run();', "unblocking")
    number = lambda e: int(e.split("-")[1])
    assert number(third) == number(first) + 2
    assert [e[1] for e in r.execute_command("RG.DUMPEXECUTIONS")] == [first, third]


def test_a_script_without_run_replies_ok_and_its_execution_has_no_results(r):
    execution = gears(r, "python", "x = 1", "UNBLOCKING")
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == [[], []]


def test_a_script_that_fails_at_its_top_level_keeps_its_error(r):
    execution = gears(r, "lua", "error('boom')", "UNBLOCKING")
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == [[], ["script:1: boom"]]
    assert status(r, execution) == "done"


def test_command_errors(r):
    unknown = "0" * 40 + "-999999"
    assert raw_error(r, "RG.GETRESULTS", unknown) == "execution plan does not exist"
    assert raw_error(r, "RG.GETRESULTSBLOCKING", unknown) == "execution plan does not exist"
    assert raw_error(r, "RG.GETEXECUTION", unknown) == "execution plan does not exist"
    assert raw_error(r, "RG.DROPEXECUTION", unknown) == "execution plan does not exist"
    assert raw_error(r, "RG.ABORTEXECUTION", unknown) == "execution does not exist"
    for command, args in [("RG.GETRESULTS", ()), ("RG.GETRESULTSBLOCKING", ()),
                          ("RG.GETRESULTSBLOCKING", ("a", "b")), ("RG.GETEXECUTION", ()),
                          ("RG.GETEXECUTION", ("a", "SHARD", "x")), ("RG.DROPEXECUTION", ()),
                          ("RG.ABORTEXECUTION", ()), ("RG.ABORTEXECUTION", ("a", "b"))]:
        assert raw_error(r, command, *args) == \
            "ERR wrong number of arguments for '%s' command" % command

    execution = start(r, "lua")
    assert raw_error(r, "RG.GETRESULTS", execution) == "execution is still running"
    assert raw_error(r, "RG.DROPEXECUTION", execution) == \
        "can not drop a not yet finished execution, abort it first."
    assert raw_error(r, "RG.GETEXECUTION", execution, "CLUSTER") == \
        "no cluster detected - use `RG.GETEXECUTION <id> [SHARD]` instead"
    assert raw_error(r, "RG.GETEXECUTION", execution, "NODE") == "unknown subcommand"
    assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == ABORTED_REPLY
    # Aborting a finished execution changes nothing.
    assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    assert status(r, execution) == "aborted"


def test_get_execution_of_a_finished_execution(r):
    r.set("a", "1")
    execution = gears(r, "python", "GB().filter(lambda x: True).map(lambda x: x['key']).run()",
                      "UNBLOCKING")
    r.execute_command("RG.GETRESULTSBLOCKING", execution)
    [[shard_field, shard, plan_field, plan]] = r.execute_command("RG.GETEXECUTION", execution)
    assert (shard_field, shard, plan_field) == ("shard_id", "0" * 40, "execution_plan")
    assert r.execute_command("RG.GETEXECUTION", execution, "shard") == \
        [[shard_field, shard, plan_field, plan]]
    fields = dict(zip(plan[0::2], plan[1::2]))
    assert plan[0::2] == ["status", "shards_received", "shards_completed", "results", "errors",
                          "total_duration", "read_duration", "steps"]
    assert (fields["status"], fields["shards_received"], fields["shards_completed"],
            fields["results"], fields["errors"]) == ("done", 0, 0, 1, [])
    assert isinstance(fields["total_duration"], int) and isinstance(fields["read_duration"], int)
    steps = fields["steps"]
    # Last step first, as RedisGears lists them.
    assert [(s[0], s[1], s[2], s[4], s[6]) for s in steps] == [
        ("type", "collect", "duration", "name", "arg"),
        ("type", "map", "duration", "name", "arg"),
        ("type", "map", "duration", "name", "arg"),
        ("type", "filter", "duration", "name", "arg"),
    ]
    assert [s[5] for s in steps] == ["collect", "to string", "map", "filter"]
    assert [s[7] for s in steps[:2]] == ["", ""]
    assert re.match(r"^<function <lambda> at 0x[0-9a-f]+>$", steps[2][7])
    assert re.match(r"^<function <lambda> at 0x[0-9a-f]+>$", steps[3][7])


@pytest.mark.parametrize("language, script, arg", [
    ("lua", "GB():map(\nfunction(x) return x.key end):run()", "<function at script:2>"),
    ("rhai", "fn key(x) { x.key }\nGB().map(key).run();", "<function key>"),
    ("rhai", "GB().map(|x| x.key).run();", "<closure>"),
])
def test_get_execution_describes_callbacks(r, language, script, arg):
    execution = gears(r, language, script, "UNBLOCKING")
    r.execute_command("RG.GETRESULTSBLOCKING", execution)
    plan = r.execute_command("RG.GETEXECUTION", execution)[0][3]
    assert plan[15][-1][7] == arg


def test_get_execution_shows_the_progress_of_a_running_execution(r):
    r.execute_command("DEBUG", "POPULATE", "2000", "key")
    execution = gears(r, "lua", "GB():map(function(x) if x.key == 'key:1500' then "
                                "while true do end end return x end):run()", "UNBLOCKING")
    deadline = time.time() + 5
    while True:
        plan = r.execute_command("RG.GETEXECUTION", execution)[0][3]
        fields = dict(zip(plan[0::2], plan[1::2]))
        if fields["status"] == "running" and fields["progress"][1] > 0:
            break
        assert time.time() < deadline
        time.sleep(0.01)
    assert plan[0::2] == ["status", "shards_received", "shards_completed", "results", "errors",
                          "total_duration", "read_duration", "steps", "progress"]
    assert (fields["results"], fields["errors"]) == (-1, [])
    progress = fields["progress"]
    assert progress[0::2] == ["records_read", "records_emitted", "step"]
    assert 0 < progress[1] <= 2000
    # The first batch may have passed the map already (before the record that loops).
    assert progress[5] in ("reader", "map", "to string")
    # Stuck on the record it can not pass, in the map step.
    time.sleep(0.3)
    progress = dict(zip(*[iter(r.execute_command("RG.GETEXECUTION", execution)[0][3][17])] * 2))
    assert progress["step"] == "map"
    assert progress["records_emitted"] < 2000


def test_profile_executions_measures_each_step(r):
    r.set("a", "1")
    script = ("import time\n"
              "def slow(x):\n"
              "    time.sleep(0.2)\n"
              "    return x\n"
              "GB().map(slow).run()")
    try:
        r.execute_command("RG.CONFIGSET", "ProfileExecutions", "1")
        execution = gears(r, "python", script, "UNBLOCKING")
        r.execute_command("RG.GETRESULTSBLOCKING", execution)
        plan = r.execute_command("RG.GETEXECUTION", execution)[0][3]
        map_step = plan[15][-1]
        assert map_step[1] == "map"
        assert 200 <= map_step[3] < 2000
        assert plan[11] >= 200
    finally:
        r.execute_command("RG.CONFIGSET", "ProfileExecutions", "0")
    execution = gears(r, "python", script, "UNBLOCKING")
    r.execute_command("RG.GETRESULTSBLOCKING", execution)
    assert r.execute_command("RG.GETEXECUTION", execution)[0][3][15][-1][3] == 0


def abort_latency(r, execution):
    started = time.perf_counter()
    assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    reply = r.execute_command("RG.GETRESULTSBLOCKING", execution)
    return reply, time.perf_counter() - started


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_abort_stops_a_runaway_loop_within_100ms(r, loop):
    execution = start(r, loop)
    time.sleep(0.2)
    reply, latency = abort_latency(r, execution)
    assert reply == ABORTED_REPLY
    assert latency < 0.1, "abort took %.1f ms" % (latency * 1000)
    assert status(r, execution) == "aborted"
    # The worker is free again: a new execution runs.
    assert gears(r, language_of(loop), COUNT[language_of(loop)]) == [["1"], []]


def test_abort_stops_a_reader_still_scanning(r):
    r.execute_command("DEBUG", "POPULATE", "300000", "key")
    execution = gears(r, "python", "GB().filter(lambda x: False).run()", "UNBLOCKING")
    wait_status(r, execution, "running")
    time.sleep(0.1)
    reply, latency = abort_latency(r, execution)
    assert reply == ABORTED_REPLY
    assert latency < 0.1, "abort took %.1f ms" % (latency * 1000)
    assert r.info("rg")["rg_workers_busy"] == 0


def test_a_queued_execution_waits_is_listed_and_can_be_aborted(r, server):
    running = [start(r, loop) for loop in ("python", "lua", "rhai")]
    queued = gears(r, "lua", "GB('ShardsIDReader'):run()", "UNBLOCKING")
    # A blocking client waits in the queue too.
    waiting = {}

    def blocking():
        client = server.new_client()
        waiting["reply"] = gears(client, "rhai", 'GB("ShardsIDReader").count().run();')
    thread = threading.Thread(target=blocking)
    thread.start()
    deadline = time.time() + 5
    while len(r.execute_command("RG.DUMPEXECUTIONS")) < 5:
        assert time.time() < deadline
        time.sleep(0.01)
    listing = r.execute_command("RG.DUMPEXECUTIONS")
    assert [e[3] for e in listing] == ["running"] * 3 + ["created"] * 2
    assert r.info("rg")["rg_executions_queued"] == 2
    plan = r.execute_command("RG.GETEXECUTION", queued)[0][3]
    assert plan[0:2] == ["status", "created"]

    reply, latency = abort_latency(r, queued)
    assert reply == ABORTED_REPLY
    assert latency < 0.1
    assert status(r, queued) == "aborted"
    assert r.info("rg")["rg_executions_queued"] == 1
    # When a worker frees up, the blocking client's execution runs.
    r.execute_command("RG.ABORTEXECUTION", running[0])
    thread.join(5)
    assert waiting["reply"] == [["1"], []]


def test_a_full_queue_is_an_error(r):
    r.execute_command("RG.CONFIGSET", "MaxQueuedExecutions", "2")
    try:
        for loop in ("python", "lua", "rhai"):
            start(r, loop)
        gears(r, "lua", "GB('ShardsIDReader'):run()", "UNBLOCKING")
        gears(r, "lua", "GB('ShardsIDReader'):run()", "UNBLOCKING")
        rejected = r.info("rg")["rg_executions_rejected"]
        error = "the execution queue is full (2 executions wait for a worker, MaxQueuedExecutions)"
        assert gears_error(r, "lua", "GB('ShardsIDReader'):run()", "UNBLOCKING") == error
        assert gears_error(r, "python", "GB('ShardsIDReader').run()") == error
        assert r.info("rg")["rg_executions_rejected"] == rejected + 2
        assert len(r.execute_command("RG.DUMPEXECUTIONS")) == 5
    finally:
        r.execute_command("RG.CONFIGSET", "MaxQueuedExecutions", "1000")


def test_ping_answers_while_the_pool_is_full(r, server):
    for loop in ("python", "lua", "rhai"):
        start(r, loop)
    for _ in range(10):
        gears(r, "python", "GB('ShardsIDReader').run()", "UNBLOCKING")
    assert r.info("rg")["rg_executions_queued"] == 10
    client = server.new_client()
    samples = []
    for _ in range(300):
        started = time.perf_counter()
        assert client.ping()
        samples.append(time.perf_counter() - started)
        time.sleep(0.002)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    assert p99 < 0.05, "PING p99 %.1f ms" % (p99 * 1000)


def test_max_executions_drops_the_oldest_finished_ones(r):
    r.execute_command("RG.CONFIGSET", "MaxExecutions", "3")
    try:
        running = start(r, "lua")
        done = []
        for _ in range(4):
            execution = gears(r, "rhai", 'GB("ShardsIDReader").run();', "UNBLOCKING")
            r.execute_command("RG.GETRESULTSBLOCKING", execution)
            done.append(execution)
        # The running one stays; the two newest finished ones are kept.
        assert [e[1] for e in r.execute_command("RG.DUMPEXECUTIONS")] == [running] + done[2:]
        assert raw_error(r, "RG.GETRESULTS", done[0]) == "execution plan does not exist"
        # Lowering the setting trims at once.
        r.execute_command("RG.CONFIGSET", "MaxExecutions", "1")
        assert [e[1] for e in r.execute_command("RG.DUMPEXECUTIONS")] == [running]
    finally:
        r.execute_command("RG.CONFIGSET", "MaxExecutions", "1000")


def blocking_socket(port, script, name):
    """A raw client, named `name`, that sent a blocking RG.LUAEXECUTE and waits."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(_encode(("CLIENT", "SETNAME", name)))
    s.recv(100)
    s.sendall(_encode(("RG.LUAEXECUTE", script)))
    return s


def wait_no_execution(r, timeout=1):
    deadline = time.time() + timeout
    while r.execute_command("RG.DUMPEXECUTIONS") or r.info("rg")["rg_workers_busy"]:
        assert time.time() < deadline, r.execute_command("RG.DUMPEXECUTIONS")
        time.sleep(0.005)
    return time.time()


@pytest.mark.parametrize("how", ["disconnect", "client kill"])
def test_a_blocked_client_that_goes_away_aborts_its_execution(r, server, how):
    aborted = r.info("rg")["rg_executions_aborted"]
    s = blocking_socket(server.port, LOOPS["lua"], "victim")
    deadline = time.time() + 5
    while r.info("rg")["rg_workers_busy"] != 1:
        assert time.time() < deadline
        time.sleep(0.005)
    started = time.time()
    if how == "disconnect":
        s.close()
    else:
        victim = [c for c in r.client_list() if c["name"] == "victim"][0]
        assert r.execute_command("CLIENT", "KILL", "ID", victim["id"]) == 1
        s.close()
    assert wait_no_execution(r) - started < 0.1
    assert r.info("rg")["rg_executions_aborted"] == aborted + 1


def test_a_queued_blocking_execution_whose_client_goes_away_never_runs(r, server):
    running = [start(r, loop) for loop in ("python", "lua", "rhai")]
    s = blocking_socket(server.port, "redis.call('SET', 'ran', '1')", "queued")
    deadline = time.time() + 5
    while len(r.execute_command("RG.DUMPEXECUTIONS")) < 4:
        assert time.time() < deadline
        time.sleep(0.005)
    s.close()
    deadline = time.time() + 1
    while len(r.execute_command("RG.DUMPEXECUTIONS")) != 3:
        assert time.time() < deadline
        time.sleep(0.005)
    for execution in running:
        r.execute_command("RG.ABORTEXECUTION", execution)
    wait_no_execution_running(r)
    assert r.get("ran") is None


def wait_no_execution_running(r):
    deadline = time.time() + 5
    while r.info("rg")["rg_workers_busy"]:
        assert time.time() < deadline
        time.sleep(0.005)


def test_unblocking_executions_go_on_when_their_client_leaves(r, server):
    client = server.new_client()
    execution = gears(client, "python", "import time\n"
                                        "def f(x):\n"
                                        "    time.sleep(0.3)\n"
                                        "    return 'finished'\n"
                                        "GB('ShardsIDReader').map(f).run()", "UNBLOCKING")
    client.close()
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == [["finished"], []]


def test_get_results_blocking_blocks_only_its_client(r, server):
    execution = start(r, "rhai")
    results = {}

    def wait():
        results["reply"] = server.new_client().execute_command("RG.GETRESULTSBLOCKING", execution)
    waiters = [threading.Thread(target=wait) for _ in range(2)]
    for w in waiters:
        w.start()
    time.sleep(0.1)
    assert r.ping()
    assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    for w in waiters:
        w.join(5)
    assert results["reply"] == ABORTED_REPLY


@pytest.mark.parametrize("options", [(), ("UNBLOCKING",), ("UNBLOCKING", "ID", "x")])
def test_refused_in_multi_and_scripts_whatever_the_options(r, options):
    error = "Can not run gears inside a multi exec, lua, or when blocking is not allowed"
    pipe = r.pipeline(transaction=True)
    pipe.execute_command("RG.LUAEXECUTE", "GB():run()", *options)
    with pytest.raises(redis.ResponseError) as e:
        pipe.execute()
    assert error in str(e.value)
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return redis.call('RG.PYEXECUTE', 'GB().run()', %s)" %
               ", ".join("'%s'" % o for o in options) if options else
               "return redis.call('RG.PYEXECUTE', 'GB().run()')", 0)
    assert error in str(e.value)
    assert r.execute_command("RG.DUMPEXECUTIONS") == []


def test_slowlog_and_commandstats_show_the_real_duration(r):
    r.config_set("slowlog-log-slower-than", "100000")
    r.execute_command("SLOWLOG", "RESET")
    r.execute_command("CONFIG", "RESETSTAT")
    try:
        script = ("import time\n"
                  "def f(x):\n"
                  "    time.sleep(0.3)\n"
                  "    return x\n"
                  "GB('ShardsIDReader').map(f).count().run()")
        assert gears(r, "python", script) == [["1"], []]
        [entry] = r.slowlog_get()
        assert entry["command"].startswith(b"RG.PYEXECUTE") or \
            entry["command"].startswith("RG.PYEXECUTE")
        assert 300000 <= entry["duration"] < 3000000
        stats = r.info("commandstats")["cmdstat_RG.PYEXECUTE"]
        assert stats["calls"] == 1
        assert 300000 <= stats["usec"] < 3000000
        # An UNBLOCKING call is quick: it only queues the execution.
        execution = gears(r, "python", script, "UNBLOCKING")
        r.execute_command("RG.GETRESULTSBLOCKING", execution)
        assert len(r.slowlog_get()) == 1
    finally:
        r.config_set("slowlog-log-slower-than", "10000")


class TestOwnership:
    """An execution belongs to the ACL user who started it."""

    @pytest.fixture
    def users(self, r, server):
        for name in ("alice", "bob"):
            r.execute_command("ACL", "SETUSER", name, "on", ">x", "~*", "&*", "+@all",
                              "-client|kill")
        yield {name: server.new_client(username=name, password="x")
               for name in ("alice", "bob")}
        for name in ("alice", "bob"):
            r.execute_command("ACL", "DELUSER", name)

    def test_other_users_do_not_see_it(self, r, users):
        alice, bob = users["alice"], users["bob"]
        execution = gears(alice, "lua", "GB('ShardsIDReader'):run()", "UNBLOCKING")
        alice.execute_command("RG.GETRESULTSBLOCKING", execution)
        assert bob.execute_command("RG.DUMPEXECUTIONS") == []
        for command in ("RG.GETRESULTS", "RG.GETRESULTSBLOCKING", "RG.GETEXECUTION",
                        "RG.DROPEXECUTION"):
            assert raw_error(bob, command, execution) == "execution plan does not exist"
        assert raw_error(bob, "RG.ABORTEXECUTION", execution) == "execution does not exist"
        assert [e[1] for e in alice.execute_command("RG.DUMPEXECUTIONS")] == [execution]
        # An administrator (who may CLIENT KILL) sees and manages every execution.
        assert [e[1] for e in r.execute_command("RG.DUMPEXECUTIONS")] == [execution]
        assert r.execute_command("RG.DROPEXECUTION", execution) == "OK"

    def test_an_administrator_aborts_anyones(self, r, users):
        execution = gears(users["alice"], "rhai", LOOPS["rhai"], "UNBLOCKING")
        wait_status(r, execution, "running")
        assert raw_error(users["bob"], "RG.ABORTEXECUTION", execution) == \
            "execution does not exist"
        assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
        assert users["alice"].execute_command("RG.GETRESULTSBLOCKING", execution) == \
            ABORTED_REPLY


@pytest.mark.parametrize("language, call", [
    ("python", "execute('RG.GETRESULTSBLOCKING', '%s')"),
    ("lua", "execute('RG.GETRESULTSBLOCKING', '%s')"),
    ("rhai", 'execute("RG.GETRESULTSBLOCKING", "%s");'),
])
def test_get_results_blocking_from_a_script_is_refused_not_a_crash(r, language, call):
    execution = start(r, "lua")
    error = ("execution is still running, and this client can not wait for it (MULTI, a "
             "script, or blocking not allowed); use RG.GETRESULTS")
    assert error in gears_error(r, language, call % execution)
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return redis.call('RG.GETRESULTSBLOCKING', ARGV[1])", 0, execution)
    assert "Blocking module command called from Lua script" in str(e.value) or error in str(e.value)
    assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == ABORTED_REPLY
    # Finished: the results, from anywhere.
    assert gears(r, language, call % execution) == "OK"


def test_finished_executions_are_trimmed_to_max_executions_as_they_end(r):
    r.execute_command("RG.CONFIGSET", "MaxExecutions", "2")
    try:
        loops = [start(r, loop) for loop in ("python", "lua", "rhai")]
        for execution in loops:
            r.execute_command("RG.ABORTEXECUTION", execution)
        wait_no_execution_running(r)
        # Two of them stay, whichever ended last.
        kept = [e[1] for e in r.execute_command("RG.DUMPEXECUTIONS")]
        assert len(kept) == 2 and set(kept) < set(loops)
        assert [str(e) for e in raw_reply(r, "RG.CONFIGSET", "MaxExecutions", "-1")] == \
            ["(error) Failed setting config value MaxExecutions"]
    finally:
        r.execute_command("RG.CONFIGSET", "MaxExecutions", "1000")


def test_get_results_blocking_clients_that_leave_free_their_memory(r, server):
    execution = start(r, "lua")
    before = r.info("memory")["used_memory"]
    for _ in range(500):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(_encode(("RG.GETRESULTSBLOCKING", execution)))
    # Each waiter that stayed would hold ~35 KB (17 MB for 500); Redis frees the clients in
    # the next turns of its event loop.
    deadline = time.time() + 5
    while r.info("memory")["used_memory"] - before > 2 << 20:
        assert time.time() < deadline, r.info("memory")["used_memory"] - before
        time.sleep(0.05)
    assert r.execute_command("RG.ABORTEXECUTION", execution) == "OK"
    assert r.execute_command("RG.GETRESULTSBLOCKING", execution) == ABORTED_REPLY


def test_explain_jobs_count_as_busy_workers_and_stop_with_their_client(r, server):
    sockets = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(_encode(("RG.EXPLAIN", "lua", "while true do end")))
        sockets.append(s)
    deadline = time.time() + 5
    while r.info("rg")["rg_workers_busy"] != 3:
        assert time.time() < deadline
        time.sleep(0.005)
    # They are not executions, but they fill the pool and the queue.
    assert r.execute_command("RG.DUMPEXECUTIONS") == []
    r.execute_command("RG.CONFIGSET", "MaxQueuedExecutions", "1")
    try:
        blocked = socket.create_connection(("127.0.0.1", server.port))
        blocked.sendall(_encode(("RG.EXPLAIN", "lua", "GB():run()")))
        deadline = time.time() + 5
        while r.info("rg")["rg_executions_queued"] != 1:
            assert time.time() < deadline
            time.sleep(0.005)
        assert raw_error(r, "RG.EXPLAIN", "lua", "GB():run()") == \
            "the execution queue is full (1 executions wait for a worker, MaxQueuedExecutions)"
    finally:
        r.execute_command("RG.CONFIGSET", "MaxQueuedExecutions", "1000")
    for s in sockets:
        s.close()
    # Their clients gone, they stop; the queued explanation runs and replies.
    blocked.settimeout(5)
    assert blocked.recv(1000).startswith(b"*")
    blocked.close()
    wait_no_execution_running(r)
