"""StreamReader registrations, in Python, Lua and Rhai: batches, duration, trimming, failure
policies, pause, two registrations on one stream, lag, and at-least-once delivery across a
kill -9, a restart and a replica's promotion."""
import os
import signal
import threading
import time

import pytest
import redis

from conftest import RedisServer
from helpers import AUDIT, data, gears, gears_error, raw_error, registrations, wait_for

SHARD = "0" * 40
SYNC_WRITES = ("SyncRegistrationWrites", "1")
LANGUAGES = ["python", "lua", "rhai"]


@pytest.fixture(scope="module")
def server():
    from conftest import serve
    yield from serve(*SYNC_WRITES)


def options(language, opts):
    """register()'s keyword arguments in each language's syntax."""
    def value(v):
        if isinstance(v, bool):
            return {"python": str(v), "lua": str(v).lower(), "rhai": str(v).lower()}[language]
        if isinstance(v, str):
            return "'%s'" % v if language != "rhai" else '"%s"' % v
        return str(v)
    if language == "python":
        return "".join(", %s=%s" % (k, value(v)) for k, v in opts.items())
    if not opts:
        return ""
    if language == "lua":
        return ", {%s}" % ", ".join("%s = %s" % (k, value(v)) for k, v in opts.items())
    return ", #{%s}" % ", ".join("%s: %s" % (k, value(v)) for k, v in opts.items())


def counting(language, stream, counter, **opts):
    """A StreamReader registration on `stream` that INCRs `counter` per entry and RPUSHes the
    entry's id to `<counter>:ids`."""
    o = options(language, opts)
    if language == "python":
        return ("GB('StreamReader').foreach(lambda x: (execute('incr', '%s'), "
                "execute('rpush', '%s:ids', x['id']))).register('%s'%s)" % (counter, counter, stream, o))
    if language == "lua":
        return ("GB('StreamReader'):foreach(function(x) execute('incr', '%s') "
                "execute('rpush', '%s:ids', x.id) end):register('%s'%s)" % (counter, counter, stream, o))
    return ('GB("StreamReader").foreach(|x| { execute("incr", "%s"); execute("rpush", "%s:ids", x.id); })'
            '.register("%s"%s)' % (counter, counter, stream, o))


def unregister_all_and_delete_user(client, user):
    for registration in registrations(client):
        client.execute_command("RG.UNREGISTER", registration[1])
    client.execute_command("ACL", "DELUSER", user)


def only(client):
    [registration] = registrations(client)
    return registration


def count(client, key):
    return int(client.get(key) or 0)


# The seed's two event examples, chained: keys -> audit-logs stream -> audit-counts.
AUDIT_KEYS = AUDIT
AUDIT_STREAM = {
    "python": "GearsBuilder('StreamReader').foreach(lambda x: execute('zadd', 'audit-counts', '1', "
              "x['key'])).register('audit-logs')",
    "lua": "GB('StreamReader'):foreach(function(x) execute('zadd', 'audit-counts', '1', x.key) end)"
           ":register('audit-logs')",
    "rhai": 'GB("StreamReader").foreach(|x| execute("zadd", "audit-counts", "1", x.key))'
            '.register("audit-logs")',
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_seed_audit_pipeline_runs_in_real_time(rr, language):
    assert gears(rr, language, AUDIT_KEYS[language]) == "OK"
    assert gears(rr, language, AUDIT_STREAM[language]) == "OK"
    rr.set("audited-1", "a")
    rr.set("plain", "b")
    rr.hset("audited-2", "f", "v")
    stream = [r for r in registrations(rr) if r[3] == "StreamReader"][0]
    assert wait_for(lambda: data(only_id(rr, stream[1]))["numSuccess"] == 2)
    assert rr.zrange("audit-counts", 0, -1, withscores=True) == [("audit-logs", 1.0)]
    # Processed entries were trimmed.
    assert wait_for(lambda: rr.xlen("audit-logs") == 0)


def only_id(client, registration_id):
    return [r for r in registrations(client) if r[1] == registration_id][0]


def test_records_are_key_id_and_value(rr):
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('rpush', 'seen', "
                        "repr(sorted(x.keys())), x['key'], x['id'], x['value']['f'], x['value']['g']))"
                        ".register('s')")
    first = rr.xadd("s", {"f": "1", "g": "a"})
    assert wait_for(lambda: rr.llen("seen") == 5)
    assert rr.lrange("seen", 0, -1) == ["['id', 'key', 'value']", "s", first, "1", "a"]


def test_binary_entries_round_trip(server, rr):
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('set', b'copy:' + x['id'].encode(), "
                        "x['value'][b'\\xff\\x00'] if b'\\xff\\x00' in x['value'] else x['value']['\\xff\\x00']))"
                        ".register('bin')")
    raw = server.new_client(decode_responses=False)
    value = b"\x00\xfe\xff binary \r\n"
    entry = raw.xadd("bin", {b"\xff\x00": value})
    assert wait_for(lambda: raw.get(b"copy:" + entry) == value)


@pytest.mark.parametrize("language", LANGUAGES)
def test_reading_entries_keeps_no_memory(rr, language):
    """Each field and value the stream iterator gave was a module string nobody freed: 2,000
    entries of 10 KB grew used_memory by 21 MB, for good."""
    gears(rr, language, {
        "python": "GB('StreamReader').foreach(lambda x: None).register('mem')",
        "lua": "GB('StreamReader'):foreach(function(x) end):register('mem')",
        "rhai": 'GB("StreamReader").foreach(|x| ()).register("mem")',
    }[language])
    rr.xadd("mem", {"a": "0"})
    assert wait_for(lambda: rr.xlen("mem") == 0)
    before = rr.info("memory")["used_memory"]
    fields = {"f%d" % i: "v" * 1000 for i in range(10)}
    for _ in range(20):
        pipe = rr.pipeline(transaction=False)
        for _ in range(100):
            pipe.xadd("mem", fields)
        pipe.execute()
        assert wait_for(lambda: rr.xlen("mem") == 0)
    grown = rr.info("memory")["used_memory"] - before
    assert grown < 2_000_000, grown


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_batch_waits_until_it_is_full(rr, language):
    assert gears(rr, language, counting(language, "b", "n", batch=3)) == "OK"
    rr.xadd("b", {"f": "1"})
    rr.xadd("b", {"f": "2"})
    time.sleep(0.3)
    assert count(rr, "n") == 0
    rr.xadd("b", {"f": "3"})
    assert wait_for(lambda: count(rr, "n") == 3)
    # One run for the three.
    assert data(only(rr))["numTriggered"] == 1


@pytest.mark.parametrize("language", LANGUAGES)
def test_duration_runs_a_partial_batch(rr, language):
    assert gears(rr, language, counting(language, "d", "n", batch=5, duration=300)) == "OK"
    started = time.time()
    rr.xadd("d", {"f": "1"})
    rr.xadd("d", {"f": "2"})
    assert wait_for(lambda: count(rr, "n") == 2)
    elapsed = time.time() - started
    assert 0.25 <= elapsed < 2.0, elapsed
    assert data(only(rr))["numTriggered"] == 1


@pytest.mark.parametrize("language", LANGUAGES)
def test_entries_already_in_the_stream_are_processed_on_register(rr, language):
    ids = [rr.xadd("old", {"f": str(i)}) for i in range(2)]
    # Fewer than a batch: they run at once all the same.
    assert gears(rr, language, counting(language, "old", "n", batch=10)) == "OK"
    assert wait_for(lambda: count(rr, "n") == 2)
    assert rr.lrange("n:ids", 0, -1) == ids


def test_prefix_and_exact_names(rr):
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('rpush', 'p', x['key'])).register('log:*')")
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('rpush', 'e', x['key'])).register('exact')")
    for key in ("log:a", "log:b", "exactly", "exact", "other"):
        rr.xadd(key, {"f": "v"})
    assert wait_for(lambda: rr.llen("p") == 2 and rr.llen("e") == 1)
    assert sorted(rr.lrange("p", 0, -1)) == ["log:a", "log:b"]
    assert rr.lrange("e", 0, -1) == ["exact"]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("trim", [True, False])
def test_trim_stream_or_not(rr, trim, language):
    gears(rr, language, counting(language, "t", "n", trimStream=trim))
    ids = [rr.xadd("t", {"f": str(i)}) for i in range(5)]
    assert wait_for(lambda: count(rr, "n") == 5)
    time.sleep(0.1)
    if trim:
        assert wait_for(lambda: rr.xlen("t") == 0)
    else:
        assert [e[0] for e in rr.xrange("t")] == ids
    assert data(only(rr))["args"] == ["batchSize", 1, "durationMS", 0, "stream", "t", "trimStream",
                                      int(trim), "onFailedPolicy", "continue", "retryInterval", 1]


def test_two_registrations_on_one_stream_each_see_every_entry(rr):
    gears(rr, "python", counting("python", "two", "a"))
    gears(rr, "lua", counting("lua", "two", "b", batch=2))
    ids = [rr.xadd("two", {"f": str(i)}) for i in range(10)]
    assert wait_for(lambda: count(rr, "a") == 10 and count(rr, "b") == 10)
    assert rr.lrange("a:ids", 0, -1) == ids
    assert rr.lrange("b:ids", 0, -1) == ids
    # Each has its own group; the stream is trimmed once both processed everything.
    groups = rr.xinfo_groups("two")
    assert len(groups) == 2 and all(g["name"].startswith("__gears_consumer_group__:") for g in groups)
    assert wait_for(lambda: rr.xlen("two") == 0)


def test_trimming_waits_for_the_slowest_registration(rr):
    gears(rr, "python", counting("python", "slow", "a"))
    gears(rr, "python", counting("python", "slow", "b"))
    [first, second] = [r[1] for r in registrations(rr)]
    rr.xadd("slow", {"f": "0"})
    assert wait_for(lambda: count(rr, "a") == 1 and count(rr, "b") == 1)
    assert rr.execute_command("RG.PAUSEREGISTRATIONS", second) == "OK"
    ids = [rr.xadd("slow", {"f": str(i)}) for i in range(1, 4)]
    assert wait_for(lambda: count(rr, "a") == 4)
    time.sleep(0.2)
    # The paused one has not read them: they stay.
    assert [e[0] for e in rr.xrange("slow")] == ids
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", second) == "OK"
    assert wait_for(lambda: count(rr, "b") == 4)
    assert wait_for(lambda: rr.xlen("slow") == 0)
    assert rr.lrange("b:ids", 1, -1) == ids
    assert first != second


def test_an_unpause_mid_stream_runs_what_waits_once(rr):
    # Without trimming the group stays in the middle of the stream: it moves past each batch
    # that ran (XGROUP SETID), and a recovery starts after it.
    gears(rr, "python", counting("python", "mid", "n", batch=3, trimStream=False))
    ids = [rr.xadd("mid", {"f": str(i)}) for i in range(4)]
    assert wait_for(lambda: count(rr, "n") == 3)
    group = lambda: rr.xinfo_groups("mid")[0]  # noqa: E731
    assert group()["last-delivered-id"] == ids[2] and group()["pending"] == 0
    rid = only(rr)[1]
    ids.append(rr.xadd("mid", {"f": "4"}))
    assert rr.execute_command("RG.PAUSEREGISTRATIONS", rid) == "OK"
    time.sleep(0.2)
    assert count(rr, "n") == 3
    # Unpausing runs what waits, whole batch or not.
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", rid) == "OK"
    assert wait_for(lambda: count(rr, "n") == 5)
    assert wait_for(lambda: group()["last-delivered-id"] == ids[4])
    # Then batches wait to be full again.
    ids.append(rr.xadd("mid", {"f": "5"}))
    time.sleep(0.3)
    assert count(rr, "n") == 5
    ids += [rr.xadd("mid", {"f": str(i)}) for i in (6, 7)]
    assert wait_for(lambda: count(rr, "n") == 8)
    assert rr.lrange("n:ids", 0, -1) == ids and rr.xlen("mid") == 8


def test_entries_left_pending_in_the_group_run_first(rr):
    # The pending list of Gears' consumer in the group (entries an older Gears read through the
    # group and did not acknowledge) is run and acknowledged before the new entries.
    gears(rr, "python", counting("python", "pend", "n", batch=2), "ID", "pend")
    rid = only(rr)[1]
    group = "__gears_consumer_group__:pend:0"
    ids = [rr.xadd("pend", {"f": str(i)}) for i in range(2)]
    assert wait_for(lambda: count(rr, "n") == 2)
    assert rr.execute_command("RG.PAUSEREGISTRATIONS", rid) == "OK"
    ids += [rr.xadd("pend", {"f": str(i)}) for i in range(2, 5)]
    taken = rr.xreadgroup(group, "__gears_client__", {"pend": ">"}, count=2)
    assert [e[0] for e in taken[0][1]] == ids[2:4]
    assert rr.xinfo_groups("pend")[0]["pending"] == 2
    # A reload in between (the cursors start over): the pending entries still run once and are
    # acknowledged.
    rr.execute_command("DEBUG", "RELOAD")
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", rid) == "OK"
    assert wait_for(lambda: count(rr, "n") == 5)
    assert rr.lrange("n:ids", 0, -1) == ids
    assert wait_for(lambda: rr.xinfo_groups("pend")[0]["pending"] == 0 and rr.xlen("pend") == 0)


def test_a_pipeline_that_keeps_its_entries_pending_does_not_hold_the_server(rr):
    """A sync pipeline that restores its own stream (with the group's pending list in the
    dump) runs the pending entry again and again: the main thread looped for ever, not even
    answering PING. Now each job runs a bounded number of batches and clients are served in
    between; RG.UNREGISTER ends it."""
    gears(rr, "python", "def f(x):\n"
                        "    execute('incr', 'runs')\n"
                        "    if 'evil' in x['value']:\n"
                        "        execute('restore', x['key'], '0', execute('dump', x['key']), 'REPLACE')\n"
                        "GB('StreamReader').foreach(f).register(prefix='pl*', mode='sync')", "ID", "pl")
    rid = only(rr)[1]
    rr.xadd("pl1", {"a": "1"})
    assert wait_for(lambda: count(rr, "runs") == 1)
    assert rr.execute_command("RG.PAUSEREGISTRATIONS", rid) == "OK"
    rr.xadd("pl1", {"evil": "1"})
    rr.xreadgroup("__gears_consumer_group__:pl:0", "__gears_client__", {"pl1": ">"})
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", rid) == "OK"
    probe = redis.Redis(port=rr.connection_pool.connection_kwargs["port"], socket_timeout=2,
                        decode_responses=True)
    for _ in range(5):
        started = time.time()
        assert probe.ping()
        assert time.time() - started < 0.5
        time.sleep(0.1)
    assert count(rr, "runs") > 100
    assert rr.execute_command("RG.UNREGISTER", rid) == "OK"
    runs = count(rr, "runs")
    time.sleep(0.2)
    assert count(rr, "runs") == runs


def test_streams_deleted_before_their_batch_leave_nothing_behind(rr):
    """The cursor of a stream deleted before its job ran stayed, with the stream's name:
    20,000 streams with 10 KB names grew Gears by 380 MB."""
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: None).register(prefix='cl*')")
    before = rr.info("gears")["rg_used_memory_native"]
    pad = "x" * 10000
    for k in range(20):
        pipe = rr.pipeline(transaction=False)
        for i in range(100):
            name = "cl%s%d" % (pad, k * 100 + i)
            pipe.xadd(name, {"a": "1"})
            pipe.delete(name)
        pipe.execute()
    assert wait_for(lambda: rr.info("gears")["rg_stream_backlog"] == 0)
    time.sleep(0.5)
    grown = rr.info("gears")["rg_used_memory_native"] - before
    assert grown < 5_000_000, grown
    assert data(only(rr))["numFailures"] == 0


@pytest.mark.parametrize("options", ["duration=2200000, batch=1000", "duration=2**62, batch=1000",
                                     "onFailedPolicy='retry', onFailedRetryInterval=3600"])
def test_long_waits_do_not_spin_the_main_thread(rr, options):
    """A module timer past 2,147,483 ms wrapped on Redis 7.0 (and past about 9e15 ms on
    Valkey) and fired on every turn of the event loop: the main thread used a whole core."""
    fail = "raise Exception('no')" if "retry" in options else "None"
    gears(rr, "python", "def f(x):\n    %s\n"
                        "GB('StreamReader').foreach(f).register(prefix='dd*', %s)" % (fail, options))
    rr.xadd("dd1", {"a": "1"})
    time.sleep(0.3)

    def cpu():
        info = rr.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    before = cpu()
    time.sleep(2)
    assert cpu() - before < 0.5
    assert rr.xlen("dd1") == 1


def test_flushes_in_a_row_queue_one_scan(server, rr):
    """Each FLUSHDB queued a scan of the whole keyspace for every stream registration: 500
    of them on an empty database left a new entry waiting for minutes behind the scans."""
    rr.execute_command("DEBUG", "POPULATE", 100000)
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('set', 'done', x['id']))"
                        ".register(prefix='probe*')")
    first = rr.xadd("probe", {"a": "1"})
    assert wait_for(lambda: rr.get("done") == first)
    other = server.new_client(db=9)
    pipe = other.pipeline(transaction=False)
    for _ in range(500):
        pipe.flushdb()
    pipe.execute()
    second = rr.xadd("probe", {"a": "2"})
    assert wait_for(lambda: rr.get("done") == second)


def test_a_batch_of_large_entries_is_read_in_parts(rr):
    # A read copies at most a few MB under the lock; the batch is still one execution.
    gears(rr, "python", "GB('StreamReader').map(lambda x: len(x['value']['v']))"
                        ".foreach(lambda n: execute('incrby', 'bytes', n))"
                        ".foreach(lambda n: execute('incr', 'n')).register('big', batch=12)")
    for i in range(12):
        rr.xadd("big", {"v": bytes([i]) * (1 << 20)})
    assert wait_for(lambda: count(rr, "n") == 12)
    assert count(rr, "bytes") == 12 << 20
    d = data(only(rr))
    assert d["numTriggered"] == 1 and d["numSuccess"] == 1
    assert wait_for(lambda: rr.xlen("big") == 0)


def test_a_stream_renamed_over_the_one_a_batch_reads_keeps_its_own_position(rr):
    # Found by a review: the batch read from the old `q1` must not move the group of the stream
    # renamed over it (that one's first entries never ran).
    gears(rr, "python", "import time\n"
                        "def f(x):\n"
                        "    execute('rpush', 'ids', x['key'] + '/' + x['id'])\n"
                        "    time.sleep(0.3)\n"
                        "GB('StreamReader').foreach(f).register('q*', batch=3, trimStream=False)")
    rr.xadd("q2", {"a": 1}, id="1-1")
    rr.xadd("q2", {"a": 1}, id="1-2")
    for i in (1, 2, 3):
        rr.xadd("q1", {"a": 1}, id="5-%d" % i)
    assert wait_for(lambda: rr.llen("ids") >= 1)
    rr.rename("q2", "q1")
    assert wait_for(lambda: rr.llen("ids") == 5, timeout=5)
    assert rr.lrange("ids", 0, -1) == ["q1/5-1", "q1/5-2", "q1/5-3", "q1/1-1", "q1/1-2"]
    assert wait_for(lambda: rr.xinfo_groups("q1")[0]["last-delivered-id"] == "1-2")


def test_a_group_moved_by_a_user_replays_the_stream(rr):
    gears(rr, "python", counting("python", "rp", "n", trimStream=False), "ID", "rp")
    ids = [rr.xadd("rp", {"f": str(i)}) for i in range(3)]
    assert wait_for(lambda: count(rr, "n") == 3)
    assert rr.xgroup_setid("rp", "__gears_consumer_group__:rp:0", ids[0])
    assert wait_for(lambda: count(rr, "n") == 5)
    assert rr.lrange("n:ids", 0, -1) == ids + ids[1:]


def test_a_client_group_on_the_same_stream_changes_nothing_for_the_registration(rr):
    gears(rr, "python", counting("python", "cg", "n", trimStream=False), "ID", "cg")
    ids = [rr.xadd("cg", {"f": str(i)}) for i in range(3)]
    assert wait_for(lambda: count(rr, "n") == 3)
    rr.xgroup_create("cg", "clients", id="0")
    rr.xgroup_setid("cg", "clients", ids[1])
    rr.xgroup_destroy("cg", "clients")
    ids.append(rr.xadd("cg", {"f": "3"}))
    assert wait_for(lambda: count(rr, "n") == 4)
    time.sleep(0.2)
    assert rr.lrange("n:ids", 0, -1) == ids


def test_another_group_changed_during_the_first_batch_does_not_replay_it(rr):
    # Found by a review: before Gears knew its group's position, any group's change counted as
    # a client moving its group, and the batch in flight ran twice.
    rr.xgroup_create("fb", "other", id="0", mkstream=True)
    ids = [rr.xadd("fb", {"f": str(i)}) for i in range(3)]
    gears(rr, "python", "import time\n"
                        "def f(x):\n"
                        "    execute('rpush', 'seen', x['id'])\n"
                        "    time.sleep(0.2)\n"
                        "GB('StreamReader').foreach(f).register('fb', batch=3, trimStream=False)")
    assert wait_for(lambda: rr.llen("seen") >= 1)
    rr.xgroup_setid("fb", "other", "$")
    rr.xgroup_destroy("fb", "other")
    assert wait_for(lambda: rr.llen("seen") == 3)
    time.sleep(0.8)
    assert rr.lrange("seen", 0, -1) == ids
    assert data(only(rr))["numTriggered"] == 1


def test_duration_counts_from_when_the_entries_left_over_arrived(rr):
    # Found by a review: entries left after a full batch waited `duration` from when that batch
    # was read, not from when they came.
    gears(rr, "python", "import time\n"
                        "def f(x):\n"
                        "    execute('rpush', 'started', repr(time.time()))\n"
                        "    time.sleep(0.5)\n"
                        "GB('StreamReader').foreach(f).register('dr', batch=2, duration=2000)")
    added = time.time()
    for i in range(5):
        rr.xadd("dr", {"f": str(i)})
    assert wait_for(lambda: rr.llen("started") == 5, timeout=10)
    started = [float(t) for t in rr.lrange("started", 0, -1)]
    # Two full batches run one after the other (0.0-1.0 s, 1.0-2.0 s); the fifth entry has
    # waited 2 s by then, so it runs at once (not 2 s after the second batch was read).
    assert started[4] - added < 2.7, [round(t - added, 2) for t in started]


def test_an_upgrade_to_another_stream_destroys_the_group_on_the_old_one(rr):
    gears(rr, "python", counting("python", "old", "n"), "ID", "up2")
    rr.xadd("old", {"f": "1"})
    assert wait_for(lambda: count(rr, "n") == 1)
    assert len(rr.xinfo_groups("old")) == 1
    gears(rr, "python", counting("python", "new", "n"), "ID", "up2", "UPGRADE")
    assert wait_for(lambda: rr.xinfo_groups("old") == [])
    rr.xadd("new", {"f": "2"})
    assert wait_for(lambda: count(rr, "n") == 2)
    assert [g["name"] for g in rr.xinfo_groups("new")] == ["__gears_consumer_group__:up2:0"]


def test_a_batch_that_can_not_be_acknowledged_is_not_run_again_and_again(server, rr):
    # Found by a review: a failed XGROUP SETID left the group where it was, and the same batch
    # ran again at once, forever.
    rr.execute_command("ACL", "SETUSER", "nosetid", "on", ">pw", "~*", "+@all", "-xgroup|setid")
    try:
        bob = server.new_client(username="nosetid", password="pw")
        gears(bob, "python", counting("python", "na", "n", batch=2))
        ids = [rr.xadd("na", {"f": str(i)}) for i in range(10)]
        assert wait_for(lambda: count(rr, "n") == 10)
        time.sleep(0.3)
        assert count(rr, "n") == 10 and rr.lrange("n:ids", 0, -1) == ids
        d = data(only(rr))
        # Each batch ran and could not be acknowledged: a failure, not a success and a failure.
        assert (d["numTriggered"], d["numSuccess"], d["numFailures"]) == (5, 0, 5), d
        assert "NOPERM" in d["lastError"]
        assert rr.xinfo_groups("na")[0]["last-delivered-id"] == "0-0"
        # Another group's changes are not a client moving this one (whose position is behind).
        rr.xgroup_create("na", "other", id="0")
        rr.xgroup_setid("na", "other", "$")
        ids.append(rr.xadd("na", {"f": "10"}))
        ids.append(rr.xadd("na", {"f": "11"}))
        assert wait_for(lambda: count(rr, "n") == 12)
        time.sleep(0.3)
        assert rr.lrange("n:ids", 0, -1) == ids
    finally:
        unregister_all_and_delete_user(rr, "nosetid")


def test_a_registration_whose_user_lost_the_stream_does_not_hold_back_trimming(server, rr):
    rr.execute_command("ACL", "SETUSER", "lost", "on", ">pw", "~*", "+@all")
    try:
        lost = server.new_client(username="lost", password="pw")
        gears(rr, "python", counting("python", "tr", "a"))
        gears(lost, "python", counting("python", "tr", "b"))
        rr.xadd("tr", {"f": "0"})
        assert wait_for(lambda: count(rr, "a") == 1 and count(rr, "b") == 1)
        assert wait_for(lambda: rr.xlen("tr") == 0)
        rr.execute_command("ACL", "SETUSER", "lost", "resetkeys", "~b")
        for i in range(5):
            rr.xadd("tr", {"f": str(i)})
        assert wait_for(lambda: count(rr, "a") == 6)
        assert wait_for(lambda: rr.xlen("tr") == 0)
    finally:
        unregister_all_and_delete_user(rr, "lost")


def test_a_registration_that_can_not_make_its_group_does_not_hold_back_trimming(server, rr):
    # Its user may read the stream but not run XGROUP: it never reads, and others still trim.
    rr.execute_command("ACL", "SETUSER", "nogroup", "on", ">pw", "~*", "+@all", "-xgroup")
    try:
        nogroup = server.new_client(username="nogroup", password="pw")
        gears(nogroup, "python", counting("python", "jobs", "b"))
        gears(rr, "python", counting("python", "jobs", "a"))
        for i in range(5):
            rr.xadd("jobs", {"f": str(i)})
        assert wait_for(lambda: count(rr, "a") == 5)
        assert wait_for(lambda: rr.xlen("jobs") == 0)
        assert count(rr, "b") == 0
    finally:
        unregister_all_and_delete_user(rr, "nogroup")


def test_the_backlog_of_a_registration_whose_user_lost_the_stream_is_shown(server, rr):
    rr.execute_command("ACL", "SETUSER", "lost", "on", ">pw", "~*", "+@all")
    try:
        lost = server.new_client(username="lost", password="pw")
        gears(lost, "python", counting("python", "bl", "n"))
        rid = only(rr)[1]
        rr.xadd("bl", {"f": "0"})
        assert wait_for(lambda: count(rr, "n") == 1)
        rr.execute_command("ACL", "SETUSER", "lost", "resetkeys", "~n", "~n:*")
        for i in range(5):
            rr.xadd("bl", {"f": str(i)})
        # Its reads fail; what waits is counted all the same.
        assert wait_for(lambda: data(only(rr))["numFailures"] >= 1)
        assert wait_for(lambda: rr.info("rg")["rg_stream_%s" % rid]["backlog"] == 5)
        assert rr.info("rg")["rg_stream_backlog"] == 5
        assert count(rr, "n") == 1
        rr.execute_command("ACL", "SETUSER", "lost", "~*")
        rr.xadd("bl", {"f": "5"})
        assert wait_for(lambda: count(rr, "n") == 7)
        assert wait_for(lambda: rr.info("rg")["rg_stream_%s" % rid]["backlog"] == 0)
    finally:
        unregister_all_and_delete_user(rr, "lost")


def test_keys_that_are_not_streams_arriving_by_rename_restore_or_copy_are_ignored(rr):
    gears(rr, "python", counting("python", "*", "n"))
    rr.set("a", "1")
    rr.rename("a", "b")
    rr.execute_command("COPY", "b", "c")
    rr.hset("h", "f", "v")
    rr.execute_command("RESTORE", "h2", 0, rr.dump("h"))
    rr.xadd("s", {"f": "1"})
    assert wait_for(lambda: count(rr, "n") == 1)
    d = data(only(rr))
    assert d["numFailures"] == 0 and d["numTriggered"] == 1, d


def failing(language, **opts):
    """A registration on `f` that INCRs `ok` per entry, or fails while `fail` is 1."""
    o = options(language, opts)
    if language == "python":
        return ("GB('StreamReader').foreach(lambda x: execute('incr', 'ok') if execute('get', 'fail') != '1' "
                "else execute('nosuchcommand')).register('f'%s)" % o)
    if language == "lua":
        return ("GB('StreamReader'):foreach(function(x) if execute('get', 'fail') == '1' then "
                "execute('nosuchcommand') else execute('incr', 'ok') end end):register('f'%s)" % o)
    return ('GB("StreamReader").foreach(|x| { if execute("get", "fail") == "1" { execute("nosuchcommand"); } '
            'else { execute("incr", "ok"); } }).register("f"%s)' % o)


@pytest.mark.parametrize("language", LANGUAGES)
def test_continue_acknowledges_a_failed_batch(rr, language):
    gears(rr, language, failing(language))
    rr.set("fail", "1")
    failed = rr.xadd("f", {"x": "1"})
    assert wait_for(lambda: data(only(rr))["numFailures"] == 1)
    d = data(only(rr))
    assert "unknown command" in d["lastError"] and d["status"] == "OK"
    # Acknowledged: the group moved past it (Gears does not use the pending list).
    assert wait_for(lambda: rr.xinfo_groups("f")[0]["last-delivered-id"] == failed)
    assert rr.xinfo_groups("f")[0]["pending"] == 0
    rr.delete("fail")
    rr.xadd("f", {"x": "2"})
    assert wait_for(lambda: count(rr, "ok") == 1)
    # A success clears lastError.
    assert wait_for(lambda: data(only(rr))["lastError"] is None)


@pytest.mark.parametrize("language", LANGUAGES)
def test_abort_stops_the_registration(rr, language):
    gears(rr, language, failing(language, onFailedPolicy="abort"))
    rr.set("fail", "1")
    rr.xadd("f", {"x": "1"})
    assert wait_for(lambda: data(only(rr))["status"] == "ABORTED")
    rr.delete("fail")
    rr.xadd("f", {"x": "2"})
    time.sleep(0.3)
    assert count(rr, "ok") == 0
    assert data(only(rr))["numFailures"] == 1
    # The failed batch was not acknowledged (the group did not move past it); unpausing runs
    # it again, then the rest.
    assert rr.xinfo_groups("f")[0]["last-delivered-id"] == "0-0"
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", only(rr)[1]) == "OK"
    assert wait_for(lambda: count(rr, "ok") == 2)
    assert data(only(rr))["status"] == "OK"


@pytest.mark.parametrize("language", LANGUAGES)
def test_retry_runs_the_same_batch_again(rr, language):
    gears(rr, language, failing(language, onFailedPolicy="retry", onFailedRetryInterval=1))
    rr.set("fail", "1")
    rr.xadd("f", {"x": "1"})
    assert wait_for(lambda: data(only(rr))["status"] == "WAITING_FOR_RETRY_ON_FAILURE")
    assert wait_for(lambda: data(only(rr))["numFailures"] >= 2, timeout=5)
    assert count(rr, "ok") == 0
    rr.delete("fail")
    assert wait_for(lambda: count(rr, "ok") == 1, timeout=5)
    assert wait_for(lambda: data(only(rr))["status"] == "OK")
    assert data(only(rr))["args"][-4:] == ["onFailedPolicy", "retry", "retryInterval", 1]


def sync_done(server, check):
    """A sync registration's effect: there when XADD replies where the server has
    post-notification jobs (Redis 7.2+, Valkey); on Redis 7.0 right after (see docs/streams.md)."""
    name, version = server.kind
    if name == "valkey" or version >= (7, 2):
        return check()
    return wait_for(check)


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_error_starting_with_pause_pauses(server, rr, language):
    script = {
        "python": "GB('StreamReader').foreach(lambda x: flat_error('PAUSE now') "
                  "if execute('get', 'paused') == 'yes' else execute('incr', 'n')).register('p', mode='sync')",
        "lua": "GB('StreamReader'):foreach(function(x) if execute('get', 'paused') == 'yes' then "
               "error('PAUSE now', 0) end execute('incr', 'n') end):register('p', {mode = 'sync'})",
        "rhai": 'GB("StreamReader").foreach(|x| { if execute("get", "paused") == "yes" { throw "PAUSE now"; } '
                'execute("incr", "n"); }).register("p", #{mode: "sync"})',
    }[language]
    assert gears(rr, language, script) == "OK"
    rr.xadd("p", {"f": "1"})
    # Sync: done before XADD replied.
    assert sync_done(server, lambda: count(rr, "n") == 1)
    rr.set("paused", "yes")
    rr.xadd("p", {"f": "2"})
    assert sync_done(server, lambda: data(only(rr))["status"] == "PAUSED")
    assert data(only(rr))["lastError"].startswith("PAUSE now")
    rr.set("paused", "no")
    rr.xadd("p", {"f": "3"})
    time.sleep(0.1)
    assert count(rr, "n") == 1
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", only(rr)[1]) == "OK"
    assert wait_for(lambda: count(rr, "n") == 3)


def test_pause_and_unpause_commands(server, rr):
    gears(rr, "python", counting("python", "pu", "n", mode="sync"))
    gears(rr, "python", "GB().register('k:*')")
    [stream_id, keys_id] = [r[1] for r in registrations(rr)]
    rr.xadd("pu", {"f": "1"})
    assert sync_done(server, lambda: count(rr, "n") == 1)
    assert rr.execute_command("RG.PAUSEREGISTRATIONS", stream_id) == "OK"
    # Pausing twice changes nothing.
    assert rr.execute_command("RG.PAUSEREGISTRATIONS", stream_id) == "OK"
    assert data(only_id(rr, stream_id))["status"] == "PAUSED"
    rr.xadd("pu", {"f": "2"})
    rr.xadd("pu", {"f": "3"})
    time.sleep(0.1)
    assert count(rr, "n") == 1
    assert rr.execute_command("RG.UNPAUSEREGISTRATIONS", stream_id) == "OK"
    assert wait_for(lambda: count(rr, "n") == 3)
    assert data(only_id(rr, stream_id))["status"] == "OK"
    assert raw_error(rr, "RG.PAUSEREGISTRATIONS", "nope") == "Execution nope does not exists on shard %s" % SHARD
    assert raw_error(rr, "RG.UNPAUSEREGISTRATIONS", "nope") == "Execution nope does not exists on shard %s" % SHARD
    assert raw_error(rr, "RG.PAUSEREGISTRATIONS", keys_id) == "Reader KeysReader does not support pause"
    assert raw_error(rr, "RG.UNPAUSEREGISTRATIONS", keys_id) == "Reader KeysReader does not support unpause"
    assert raw_error(rr, "RG.PAUSEREGISTRATIONS").startswith("ERR wrong number of arguments")
    assert raw_error(rr, "RG.PAUSEREGISTRATIONS", stream_id, keys_id).startswith("ERR wrong number of arguments")


@pytest.mark.parametrize("script,error", [
    ("register(onFailedPolicy='test')", "onFailedPolicy must be Continue/Abort/Retry"),
    ("register(onFailedPolicy=1)", "onFailedPolicy must be a string (Continue/Abort/Retry)"),
    ("register(mode='sync', onFailedPolicy='abort')",
     "ExecutionMode sync can only be combined with OnFailedPolicy Continue"),
    ("register(batch='x')", "batch argument must be a number"),
    ("register(duration='x')", "duration argument must be a number"),
    ("register(onFailedRetryInterval='x')", "retryInterval argument must be a number"),
    ("register(trimStream=1)", "pyTrimmStream argument must be a boolean"),
    ("register(batch=0)", "batch argument must be a number of at least 1"),
])
def test_register_argument_errors(rr, script, error):
    assert error in gears_error(rr, "python", "GB('StreamReader')." + script)
    assert registrations(rr) == []


def test_argument_errors_in_lua_and_rhai(rr):
    assert "onFailedPolicy must be Continue/Abort/Retry" in gears_error(
        rr, "lua", "GB('StreamReader'):register('s', {onFailedPolicy = 'x'})")
    assert "ExecutionMode sync can only be combined with OnFailedPolicy Continue" in gears_error(
        rr, "rhai", 'GB("StreamReader").register("s", #{mode: "sync", onFailedPolicy: "retry"})')


def test_dumpregistrations_shape(rr):
    gears(rr, "python", "GB('StreamReader', desc='d').register('s*', batch=7, duration=50, onFailedPolicy='Retry', "
                        "onFailedRetryInterval=3, trimStream=False)")
    [registration] = registrations(rr)
    assert registration[0::2] == ["id", "reader", "desc", "RegistrationData", "PD", "ExecutionThreadPool"]
    assert registration[3] == "StreamReader" and registration[5] == "d"
    fields = registration[7][0::2]
    assert fields == ["mode", "numTriggered", "numSuccess", "numFailures", "numAborted", "lastRunDurationMS",
                      "totalRunDurationMS", "avgRunDurationMS", "lastEstimatedLagMS", "avgEstimatedLagMS",
                      "lastError", "args", "status"]
    d = data(registration)
    assert d["args"] == ["batchSize", 7, "durationMS", 50, "stream", "s*", "trimStream", 0,
                         "onFailedPolicy", "retry", "retryInterval", 3]
    assert (d["mode"], d["numTriggered"], d["lastEstimatedLagMS"], d["avgEstimatedLagMS"], d["lastError"],
            d["status"]) == ("async", 0, 0, "0", None, "OK")


def test_lag_and_backlog_are_visible(rr):
    gears(rr, "python", counting("python", "lag", "n"))
    rid = only(rr)[1]
    rr.xadd("lag", {"f": "0"})
    assert wait_for(lambda: count(rr, "n") == 1)
    rr.execute_command("RG.PAUSEREGISTRATIONS", rid)
    for i in range(3):
        rr.xadd("lag", {"f": str(i)})
    info = rr.info("rg")
    assert info["rg_stream_%s" % rid]["backlog"] == 3
    assert info["rg_stream_%s" % rid]["status"] == "PAUSED"
    assert info["rg_stream_backlog"] == 3
    time.sleep(0.3)
    rr.execute_command("RG.UNPAUSEREGISTRATIONS", rid)
    assert wait_for(lambda: count(rr, "n") == 4)
    # The last batch waited at least the 300 ms of the pause.
    d = data(only(rr))
    assert d["lastEstimatedLagMS"] >= 250
    assert float(d["avgEstimatedLagMS"]) > 0
    assert wait_for(lambda: rr.info("rg")["rg_stream_%s" % rid]["backlog"] == 0)
    rr.execute_command("RG.CLEARREGISTRATIONSSTATS")
    assert data(only(rr))["lastEstimatedLagMS"] == 0


def test_an_upgrade_goes_on_from_the_old_position(rr):
    gears(rr, "python", counting("python", "up", "old", trimStream=False), "ID", "s1")
    for i in range(3):
        rr.xadd("up", {"f": str(i)})
    assert wait_for(lambda: count(rr, "old") == 3)
    gears(rr, "python", counting("python", "up", "new", trimStream=False), "ID", "s1", "UPGRADE")
    late = [rr.xadd("up", {"f": str(i)}) for i in range(2)]
    assert wait_for(lambda: count(rr, "new") == 2)
    time.sleep(0.2)
    assert rr.lrange("new:ids", 0, -1) == late and count(rr, "old") == 3
    assert len(rr.xinfo_groups("up")) == 1


def test_unregister_destroys_the_group(rr):
    gears(rr, "python", counting("python", "gone", "n"))
    rr.xadd("gone", {"f": "1"})
    assert wait_for(lambda: count(rr, "n") == 1)
    assert len(rr.xinfo_groups("gone")) == 1
    assert rr.execute_command("RG.UNREGISTER", only(rr)[1]) == "OK"
    assert wait_for(lambda: rr.xinfo_groups("gone") == [])
    rr.xadd("gone", {"f": "2"})
    time.sleep(0.2)
    assert count(rr, "n") == 1


@pytest.mark.parametrize("onFailedPolicy", ["continue", "retry"])
def test_an_unregistered_registration_is_freed_though_its_timer_waits(rr, onFailedPolicy):
    # A partial batch arms the `duration` timer (10 minutes); a failed batch under `retry` arms
    # the retry timer (10 minutes). Each held the registration, and the 48 MB its function
    # holds, until it fired.
    retry = onFailedPolicy == "retry"
    function, batch = ("lambda x: 1 / 0 if big else 0", 1) if retry else ("lambda x: len(big)", 1000)
    python_memory = lambda: rr.info("rg")["rg_used_memory_python"]
    before = python_memory()
    gears(rr, "python", "big = 'x' * 50000000\nGB('StreamReader').foreach(%s).register(prefix='held', "
                        "batch=%d, duration=600000, onFailedPolicy='%s', onFailedRetryInterval=600)"
                        % (function, batch, onFailedPolicy))
    rr.xadd("held", {"f": "1"})
    time.sleep(0.3)
    assert python_memory() > before + (45 << 20)
    assert wait_for(lambda: data(only(rr))["status"] == ("WAITING_FOR_RETRY_ON_FAILURE" if retry else "OK"))
    assert rr.execute_command("RG.UNREGISTER", only(rr)[1]) == "OK"
    assert wait_for(lambda: python_memory() < before + (5 << 20), timeout=5)


def test_a_deleted_stream_made_again_is_read_from_its_start(rr):
    gears(rr, "python", counting("python", "again", "n", trimStream=False))
    rr.xadd("again", {"f": "1"})
    assert wait_for(lambda: count(rr, "n") == 1)
    rr.delete("again")
    new = rr.xadd("again", {"f": "2"})
    assert wait_for(lambda: count(rr, "n") == 2)
    assert rr.lrange("n:ids", -1, -1) == [new]
    rr.flushall()
    rr.xadd("again", {"f": "3"})
    assert wait_for(lambda: count(rr, "n") == 1)


def test_a_user_who_may_not_read_the_stream_gets_nothing(server, rr):
    rr.execute_command("ACL", "SETUSER", "streamer", "on", ">pw", "~mine:*", "+@all")
    try:
        alice = server.new_client(username="streamer", password="pw")
        gears(alice, "python", "GB('StreamReader').foreach(lambda x: execute('incr', 'mine:n')).register('*')")
        rr.xadd("secret", {"f": "1"})
        rr.xadd("mine:s", {"f": "1"})
        assert wait_for(lambda: count(rr, "mine:n") == 1)
        time.sleep(0.2)
        assert count(rr, "mine:n") == 1
        assert rr.xlen("secret") == 1 and rr.xinfo_groups("secret") == []
    finally:
        unregister_all_and_delete_user(rr, "streamer")


def test_async_keeps_order_and_loses_nothing_under_load(server, rr):
    gears(rr, "python", counting("python", "load", "n", batch=50))
    clients = [server.new_client() for _ in range(4)]
    added = [[] for _ in clients]

    def produce(i):
        for j in range(500):
            added[i].append(clients[i].xadd("load", {"c": str(i), "j": str(j)}))

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for(lambda: count(rr, "n") == 2000, timeout=20)
    ids = rr.lrange("n:ids", 0, -1)
    # Every entry once, in the stream's order.
    assert sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) == ids
    assert sorted(ids) == sorted(sum(added, []))


# Durability: a process killed with SIGKILL, restarted from its AOF or RDB; a promoted replica.

RECORDER = ("GB('StreamReader').foreach(lambda x: (execute('sadd', 'seen', x['id']), "
            "execute('incr', 'runs'))).register('events', batch=20)")


def produce_until_killed(server, stop_after):
    """XADDs to `events` until `stop_after` entries were acknowledged, then kills the server
    with SIGKILL while more XADDs are in flight; returns the ids the server acknowledged."""
    acked = []
    client = server.new_client()
    try:
        while True:
            acked.append(client.xadd("events", {"n": str(len(acked))}))
            if len(acked) == stop_after:
                os.kill(server.process.pid, signal.SIGKILL)
    except redis.ConnectionError:
        pass
    server.process.wait(timeout=10)
    return acked


@pytest.mark.parametrize("persistence", ["aof", "rdb"])
def test_nothing_is_lost_across_a_kill_and_a_restart(persistence):
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    s = RedisServer(extra_args=SYNC_WRITES, server_args=aof if persistence == "aof" else ())
    try:
        c = s.new_client()
        gears(c, "python", RECORDER)
        if persistence == "aof":
            acked = produce_until_killed(s, 1500)
            durable = acked
        else:
            durable = [c.xadd("events", {"n": str(i)}) for i in range(500)]
            # Saved while some entries wait or run.
            c.save()
            acked = produce_until_killed(s, 500)
        s = RedisServer(extra_args=SYNC_WRITES, server_args=aof if persistence == "aof" else (), dir=s.dir)
        c = s.new_client()
        # Every durable entry is processed; only a batch in flight may run twice.
        assert wait_for(lambda: c.scard("seen") >= len(durable) and c.xinfo_groups("events")[0]["pending"] == 0,
                        timeout=20)
        seen = c.smembers("seen")
        assert set(durable) <= seen
        runs = int(c.get("runs"))
        assert runs - c.scard("seen") <= 20 * 2
        assert len(acked) >= len(durable)
    finally:
        s.stop()


def test_a_promoted_replica_continues_the_stream():
    master = RedisServer(extra_args=SYNC_WRITES, server_args=("--repl-diskless-sync-delay", "0"))
    replica = None
    try:
        m = master.new_client()
        gears(m, "python", "GB('StreamReader').foreach(lambda x: flat_error('PAUSE') if execute('get', 'hold') "
                           "== '1' else (execute('sadd', 'seen', x['id']), execute('incr', 'runs')))"
                           ".register('events', batch=5)")
        replica = RedisServer(extra_args=SYNC_WRITES,
                              server_args=("--replicaof", "127.0.0.1", str(master.port), "--replica-read-only", "no"))
        r = replica.new_client()
        assert wait_for(lambda: r.info("replication").get("master_link_status") == "up")
        assert wait_for(lambda: len(registrations(r)) == 1)
        first = [m.xadd("events", {"n": str(i)}) for i in range(10)]
        assert wait_for(lambda: m.scard("seen") == 10)
        # The master stops processing (a PAUSE error) with entries waiting, then dies.
        m.set("hold", "1")
        later = [m.xadd("events", {"n": str(i)}) for i in range(10, 23)]
        assert wait_for(lambda: data(registrations(m)[0])["status"] == "PAUSED")
        m.execute_command("WAIT", 1, 5000)
        assert wait_for(lambda: r.xlen("events") == 13)
        os.kill(master.process.pid, signal.SIGKILL)
        master.process.wait(timeout=10)
        # The replica fires nothing until promoted.
        r.delete("hold")
        time.sleep(0.3)
        assert r.scard("seen") == 10
        r.execute_command("REPLICAOF", "NO", "ONE")
        assert wait_for(lambda: r.scard("seen") == 23)
        assert r.smembers("seen") == set(first + later)
        # What the master acknowledged did not run again.
        assert wait_for(lambda: int(r.get("runs")) == 23)
        assert wait_for(lambda: r.xlen("events") == 0)
    finally:
        if replica:
            replica.stop()
        master.stop()


# Found by a hostile review: none of these may crash, freeze or spin the server.

def test_a_registration_whose_user_is_deleted_fails_once_per_event_not_in_a_loop(server, rr):
    rr.execute_command("ACL", "SETUSER", "gone", "on", ">pw", "~gone:*", "+@all")
    bob = server.new_client(username="gone", password="pw")
    gears(bob, "python", counting("python", "gone:x*", "gone:a"))
    gears(bob, "python", counting("python", "gone:x*", "gone:b", mode="sync"))
    rr.xadd("gone:x", {"f": "1"})
    assert wait_for(lambda: count(rr, "gone:a") == 1 and count(rr, "gone:b") == 1)
    created = rr.info("rg")["rg_executions_created"]
    rr.execute_command("ACL", "DELUSER", "gone")
    rr.xadd("gone:x", {"f": "2"})
    time.sleep(0.5)
    assert rr.ping()
    # A failed read is not a batch: no execution, a failure or two, no loop.
    assert rr.info("rg")["rg_executions_created"] == created
    assert rr.info("rg")["rg_workers_busy"] == 0
    for registration in registrations(rr):
        d = data(registration)
        assert 1 <= d["numFailures"] <= 2, d
        assert "no longer exists" in d["lastError"]


def test_a_group_destroyed_while_pending_entries_run_is_made_again(rr):
    gears(rr, "python", "import time\n"
                        "def f(x):\n"
                        "    if execute('exists', 'hold') == 1:\n"
                        "        flat_error('PAUSE')\n"
                        "    time.sleep(0.5)\n"
                        "    execute('incr', 'n')\n"
                        "GB('StreamReader').foreach(f).register('gd')", "ID", "gd")
    rr.set("hold", "1")
    rr.xadd("gd", {"f": "1"})
    assert wait_for(lambda: data(only(rr))["status"] == "PAUSED")
    rr.delete("hold")
    rr.execute_command("RG.UNPAUSEREGISTRATIONS", only(rr)[1])
    time.sleep(0.2)
    rr.execute_command("XGROUP", "DESTROY", "gd", "__gears_consumer_group__:gd:0")
    assert wait_for(lambda: rr.info("rg")["rg_workers_busy"] == 0, timeout=5)
    rr.xadd("gd", {"f": "2"})
    # The group is made again at the stream's start: both entries run (again).
    assert wait_for(lambda: count(rr, "n") >= 2, timeout=5)
    assert rr.ping()


def test_sync_registrations_started_outside_a_command_survive_aof_and_replicas():
    # Unpause, registration over existing entries and the end of loading run sync jobs from a
    # timer, whose commands Redis 7.0 must propagate (it asserted on them before).
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    s = RedisServer(extra_args=SYNC_WRITES, server_args=aof)
    replica = None
    try:
        c = s.new_client()
        replica = RedisServer(extra_args=SYNC_WRITES, server_args=("--replicaof", "127.0.0.1", str(s.port)))
        assert wait_for(lambda: replica.client.info("replication").get("master_link_status") == "up")
        c.xadd("pre", {"f": "1"})
        c.xadd("pre", {"f": "2"})
        gears(c, "python", counting("python", "pre", "n", mode="sync"))
        assert wait_for(lambda: count(c, "n") == 2)
        rid = only(c)[1]
        c.execute_command("RG.PAUSEREGISTRATIONS", rid)
        c.xadd("pre", {"f": "3"})
        c.execute_command("RG.UNPAUSEREGISTRATIONS", rid)
        assert wait_for(lambda: count(c, "n") == 3)
        assert wait_for(lambda: replica.client.get("n") == "3")
        # The replica has the group, at the master's position.
        position = lambda client: [(g["name"], g["pending"], g["last-delivered-id"])  # noqa: E731
                                   for g in client.xinfo_groups("pre")]
        assert wait_for(lambda: position(replica.client) == position(c))
        s.stop(keep_dir=True)
        s = RedisServer(extra_args=SYNC_WRITES, server_args=aof, dir=s.dir)
        c = s.new_client()
        c.xadd("pre", {"f": "4"})
        # Right after the restart the registration may still be catching up from its group (a
        # timer job at the end of loading): the entry is processed then, once.
        assert wait_for(lambda: count(c, "n") == 4) and c.ping()
        time.sleep(0.2)
        assert count(c, "n") == 4
    finally:
        if replica:
            replica.stop()
        s.stop()


def test_a_sync_registration_feeding_its_own_stream_does_not_freeze_the_server(server, rr):
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('xadd', x['key'], '*', 'n', "
                        "str(int(x['value']['n']) + 1))).register('loop', mode='sync')")
    rr.xadd("loop", {"n": "0"})
    other = server.new_client()
    started = time.time()
    assert other.ping()
    assert time.time() - started < 1.0
    rr.execute_command("RG.UNREGISTER", only(rr)[1])
    time.sleep(0.2)
    assert other.ping()


def test_a_sync_registration_fired_by_a_worker_waits_for_its_command(server, rr):
    if server.kind == ("redis", server.kind[1]) and server.kind[1] < (7, 2):
        pytest.skip("Redis 7.0 has no post-notification jobs: sync writes run inside the event")
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('del', x['key'])).register('w', mode='sync')")
    gears(rr, "python", "GB('ShardsIDReader').foreach(lambda x: execute('xadd', 'w', 'MAXLEN', '1', '*', 'f', 'v')).run()")
    assert rr.ping() and rr.exists("w") == 0


def test_the_audit_pipeline_with_a_sync_keys_registration(rr):
    # Its XADDs run inside a keyspace notification, where Redis 7.0 raises no event for Gears.
    gears(rr, "python", AUDIT_KEYS["python"].replace(".register()", ".register(mode='sync')"))
    gears(rr, "python", AUDIT_STREAM["python"])
    for i in range(3):
        rr.set("audited-%d" % i, "a")
    stream = [r for r in registrations(rr) if r[3] == "StreamReader"][0]
    assert wait_for(lambda: data(only_id(rr, stream[1]))["numSuccess"] == 3)
    assert wait_for(lambda: rr.xlen("audit-logs") == 0)


def test_a_user_who_may_not_read_a_stream_does_not_stop_its_trimming(server, rr):
    gears(rr, "python", counting("python", "audit", "n"))
    rr.execute_command("ACL", "SETUSER", "other", "on", ">pw", "~other:*", "+@all")
    try:
        other = server.new_client(username="other", password="pw")
        gears(other, "python", counting("python", "*", "other:n"))
        for i in range(5):
            rr.xadd("audit", {"f": str(i)})
        assert wait_for(lambda: count(rr, "n") == 5)
        assert wait_for(lambda: rr.xlen("audit") == 0)
    finally:
        unregister_all_and_delete_user(rr, "other")


def test_flushall_rename_and_move_leave_no_stale_backlog(server, rr):
    gears(rr, "python", counting("python", "*", "n", batch=10))
    for _ in range(5):
        rr.xadd("s1", {"f": "1"})
    assert wait_for(lambda: rr.info("rg")["rg_stream_backlog"] == 5)
    rr.flushall()
    assert wait_for(lambda: rr.info("rg")["rg_stream_backlog"] == 0)
    rr.xadd("s2", {"f": "1"})
    rr.rename("s2", "s3")
    # The renamed stream's entries run (whole batch or not) and nothing stays counted.
    assert wait_for(lambda: count(rr, "n") == 1 and rr.info("rg")["rg_stream_backlog"] == 0)
    rr.xadd("mv", {"f": "1"})
    rr.move("mv", 1)
    # Run in the stream's database, as its registration's records are.
    db1 = server.new_client(db=1)
    assert wait_for(lambda: count(db1, "n") == 1)
    db1.flushdb()


def test_an_upgrade_does_not_run_the_batch_in_flight_twice(rr):
    gears(rr, "python", "import time\n"
                        "def f(x):\n"
                        "    execute('rpush', 'seen', x['id'])\n"
                        "    time.sleep(1)\n"
                        "GB('StreamReader').foreach(f).register('up2', trimStream=False)", "ID", "u2")
    rr.xadd("up2", {"f": "1"}, id="1-1")
    rr.xadd("up2", {"f": "2"}, id="2-1")
    time.sleep(0.3)
    gears(rr, "python", "GB('StreamReader').foreach(lambda x: execute('rpush', 'seen', 'v2:' + x['id']))"
                        ".register('up2', trimStream=False)", "ID", "u2", "UPGRADE")
    assert wait_for(lambda: rr.llen("seen") == 2, timeout=5)
    time.sleep(1.5)
    assert rr.lrange("seen", 0, -1) == ["1-1", "v2:2-1"]


def test_a_write_pause_delays_a_sync_batch_without_freezing_the_server(server, rr):
    gears(rr, "python", counting("python", "cp", "n", mode="sync", batch=5, duration=200))
    rr.xadd("cp", {"f": "1"})
    rr.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
    other = server.new_client()
    started = time.time()
    assert other.ping() and time.time() - started < 0.5
    # The waiting entry runs once writes may go on.
    assert wait_for(lambda: count(rr, "n") == 1, timeout=5)
    assert data(only(rr))["numFailures"] == 0
