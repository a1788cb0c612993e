"""Redis Cluster: a batch run on any shard of a loopback 3-master cluster gives the same reply
as on a single instance with the same data; the script's top level has its effects once;
records meet at collect and repartition steps; a shard that does not answer gives an error
naming it, not a hang."""
import os
import signal
import subprocess
import time

import pytest
import redis

from cluster import REDIS_CLI, Cluster, cluster_port
from conftest import RedisServer
from helpers import gears, gears_error, wait_for

IDLE = ("ExecutionMaxIdleTime", "2000")


def load(client):
    for i in range(60):
        client.set("key:%d" % i, str(i % 3))
        client.hset("user:%d" % i, mapping={"name": "u%d" % i, "age": str(20 + i % 40)})


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(masters=3, module_args=IDLE)
    load(c.client())
    yield c
    alive = all(n.alive() for n in c.nodes)
    c.stop()
    assert alive, "a cluster node died"


@pytest.fixture(scope="module")
def single():
    s = RedisServer(extra_args=IDLE)
    load(s.new_client())
    yield s
    s.stop()


SCENARIOS = [
    ("python", "GB().count().run()"),
    ("python", "GB().count().run('key:*')"),
    ("python", "GB().map(lambda x: x['key']).run('key:*')"),
    ("python", "GB().countby(lambda x: x['value']).run('key:*')"),
    ("python", "GB().groupby(lambda x: x['value'], lambda k, a, r: (a or 0) + 1).run('key:*')"),
    ("python", "GB().map(lambda x: int(x['value']['age'])).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run('user:*')"),
    ("python", "GB().map(lambda x: int(x['value']['age'])).avg().run('user:*')"),
    ("python", "GB().map(lambda x: x['value']).distinct().run('key:*')"),
    ("python", "GB().map(lambda x: int(x['value']['age'])).sort().run('user:*')"),
    ("python", "GB().filter(lambda x: int(x['value']['age']) > 35).count().run('user:*')"),
    ("python", "GB().flatmap(lambda x: [x['key'], x['key']]).count().run('key:*')"),
    ("python", "GB('ShardsIDReader').count().run()"),
    ("lua", "GB():count():run('key:*')"),
    ("lua", "GB():countby(function(x) return x.value end):run('key:*')"),
    ("lua", "GB():map(function(x) return x.key end):run('user:*')"),
    ("rhai", 'GB().count().run("user:*")'),
    ("rhai", 'GB().map(|x| x.key).run("key:*")'),
    ("rhai", 'GB().countby(|x| x.value).run("key:*")'),
]


def normalized(reply):
    results, errors = reply
    return sorted(map(str, results)), errors


@pytest.mark.parametrize("language,script", SCENARIOS)
def test_every_shard_answers_as_a_single_instance(cluster, single, language, script):
    expected = gears(single.new_client(), language, script)
    if "ShardsIDReader" in script:
        # One record per shard.
        expected = [["3"], []]
    for node in cluster.masters:
        got = gears(node.new_client(), language, script)
        if "sort()" in script:
            assert got == expected, node.port
        else:
            assert normalized(got) == normalized(expected), node.port


def test_collect_false_and_async_local_stay_local(cluster):
    node = cluster.masters[0]
    local = node.client.dbsize()
    c = node.new_client()
    assert gears(c, "python", "GB().count().run(mode='async_local')") == [[str(local)], []]
    assert gears(c, "python", "GB().count().run()") == [["120"], []]


def test_repartition_moves_records_to_the_owner_of_their_key(cluster):
    node = cluster.masters[1]
    reply = gears(node.new_client(), "python",
                  "GB().repartition(lambda x: x['value']).foreach(lambda x: execute('incr', x['value']))"
                  ".count().run('key:*')")
    assert reply == [["60"], []]
    client = cluster.client()
    assert [client.get(k) for k in ("0", "1", "2")] == ["20", "20", "20"]
    for k in ("0", "1", "2"):
        client.delete(k)


def owner_of(cluster, key):
    slot = cluster.nodes[0].client.execute_command("CLUSTER", "KEYSLOT", key)
    for node in cluster.masters:
        for start, end, *_ in node.client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return [n for n in cluster.nodes if n.port == _[0][1]][0]
    raise AssertionError("no owner")


def test_the_top_level_runs_once_and_its_values_reach_every_shard(cluster):
    node = owner_of(cluster, "{t}threshold")
    c = node.new_client()
    c.set("{t}threshold", "50")
    script = ("threshold = int(execute('get', '{t}threshold'))\n"
              "execute('incr', '{t}runs')\n"
              "GB().filter(lambda x: int(x['value']['age']) > threshold).count().run('user:*')")
    # Ages are 20..59: 9 of every 40 are over 50.
    assert gears(c, "python", script) == [[str(sum(1 for i in range(60) if 20 + i % 40 > 50))], []]
    assert c.get("{t}runs") == "1"
    c.delete("{t}threshold", "{t}runs")


def test_a_key_of_another_shard_is_a_clear_error(cluster):
    node = owner_of(cluster, "{t}x")
    other = [n for n in cluster.masters if n.port != node.port][0]
    error = gears_error(other.new_client(), "python", "execute('set', '{t}x', '1')")
    assert "ERR Attempted to access a non local key in a cluster node" in error


@pytest.mark.parametrize("language,script", [
    ("python", "GB('ShardsIDReader').map(lambda x: hashtag()).run()"),
    ("lua", "GB('ShardsIDReader'):map(function(x) return hashtag() end):run()"),
    ("rhai", 'GB("ShardsIDReader").map(|x| hashtag()).run()'),
])
def test_hashtag_names_a_slot_of_each_shard(cluster, language, script):
    tags, errors = gears(cluster.masters[0].client, language, script)
    assert errors == [] and len(set(tags)) == 3
    # Each shard answers a tag of one of its own slots (it was 06S, slot 0, everywhere).
    owners = {owner_of(cluster, "k{%s}" % tag).port for tag in tags}
    assert owners == {n.port for n in cluster.masters}


def test_a_shard_whose_script_builds_another_plan_aborts_the_run(cluster):
    # A setting read with gearsConfigGet differs on one shard: that shard's plan (its limit)
    # is not the initiator's, and mixing the two would give a wrong answer silently.
    first, second = cluster.masters[0], cluster.masters[1]
    second.client.execute_command("RG.CONFIGSET", "drift", "7")
    try:
        script = ("n = int(gearsConfigGet('drift', '1000'))\n"
                  "GB().map(lambda x: x['key']).limit(n).count().run('key:*')")
        results, errors = gears(first.client, "python", script)
        assert results == []
        assert errors == ["ERR shard %s: the script built another plan here than on the "
                          "initiator (its steps or their arguments depend on the shard: a "
                          "setting, a random value)"
                          % second.client.execute_command("CLUSTER", "MYID")]
    finally:
        for node in cluster.masters:
            node.client.execute_command("RG.CONFIGSET", "drift", "1000")
    assert gears(first.client, "python", script) == [["60"], []]


def test_info_cluster(cluster, single):
    node = cluster.masters[0]
    info = node.client.execute_command("RG.INFOCLUSTER")
    assert info[0::2][:2] == ["MyId", "MyRunId"]
    assert info[1] == node.client.execute_command("CLUSTER", "MYID")
    shards = info[4]
    assert len(shards) == 3
    assert all(s[0::2] == ["id", "ip", "port", "unixSocket", "runid", "minHslot", "maxHslot",
                           "pendingMessages"] for s in shards)
    assert sorted(s[5] for s in shards) == sorted(n.port for n in cluster.masters)
    assert node.client.execute_command("RG.REFRESHCLUSTER") == "OK"
    assert single.client.execute_command("RG.INFOCLUSTER") == "no cluster mode"


def test_a_shard_that_does_not_answer_is_named_within_the_idle_time(cluster):
    [first, second, third] = cluster.masters
    third_id = third.client.execute_command("CLUSTER", "MYID")
    os.kill(third.process.pid, signal.SIGSTOP)
    try:
        started = time.time()
        reply = gears(first.new_client(), "python", "GB().count().run()")
        elapsed = time.time() - started
        assert "Execution max idle reached" in str(reply)
        assert third_id in str(reply)
        assert 1.5 < elapsed < 10, elapsed
    finally:
        os.kill(third.process.pid, signal.SIGCONT)
    # The cluster recovers: the next run is whole again.
    assert wait_for(lambda: all(cluster._ok(n) for n in cluster.nodes))
    assert gears(first.new_client(), "python", "GB().count().run()") == [["120"], []]


def registration_ids(node):
    return sorted(r[1] for r in node.client.execute_command("RG.DUMPREGISTRATIONS"))


def test_a_registration_is_made_on_every_shard_and_fires_where_the_key_lives(cluster):
    [first, second, third] = cluster.masters
    assert gears(first.new_client(), "python",
                 "GB().foreach(lambda x: execute('incr', '{' + x['key'] + '}:n')).register('reg:*')") == "OK"
    ids = registration_ids(first)
    assert len(ids) == 1 and registration_ids(second) == ids and registration_ids(third) == ids
    client = cluster.client()
    keys = ["reg:%d" % i for i in range(30)]
    for key in keys:
        client.set(key, "v")
    assert wait_for(lambda: all(client.get("{%s}:n" % key) == "1" for key in keys))
    # Every shard fired for its own keys.
    assert all(node.client.dbsize() > 0 for node in cluster.masters)
    # Unregistered on another shard: gone everywhere.
    assert second.client.execute_command("RG.UNREGISTER", ids[0]) == "OK"
    assert wait_for(lambda: all(registration_ids(n) == [] for n in cluster.masters))
    for key in keys:
        client.delete(key, "{%s}:n" % key)


def test_a_registration_that_fails_on_one_shard_is_made_on_none(cluster):
    [first, second, third] = cluster.masters
    third.client.execute_command("RG.CONFIGSET", "FailHere", "1")
    try:
        reply = first.new_client().execute_command(
            "RG.PYEXECUTE",
            "def check():\n"
            "    if gearsConfigGet('FailHere', '0') == '1':\n"
            "        raise Exception('not on this shard')\n"
            "GB().register('never:*', onRegistered=check)")
        third_id = third.client.execute_command("CLUSTER", "MYID")
        assert len(reply) == 1 and "shard-%s" % third_id in str(reply[0])
        assert "not on this shard" in str(reply[0])
        # Two phases: no shard made it live, not even for a moment.
        assert all(registration_ids(n) == [] for n in cluster.masters)
        assert all(n.client.execute_command("RG.PYDUMPSESSIONS") == [] for n in cluster.masters)
    finally:
        third.client.execute_command("RG.CONFIGSET", "FailHere", "0")


def test_an_upgrade_reaches_every_shard(cluster):
    [first, second, third] = cluster.masters
    gears(first.new_client(), "python", "GB().register('up:*')", "ID", "cs")
    old = registration_ids(second)
    gears(second.new_client(), "python", "GB().register('up2:*')", "ID", "cs", "UPGRADE")
    new = registration_ids(first)
    assert new != old and all(registration_ids(n) == new for n in cluster.masters)
    sessions = third.client.execute_command("RG.PYDUMPSESSIONS")
    assert [s[1] for s in sessions] == ["cs"]
    third.client.execute_command("RG.UNREGISTER", new[0])
    assert wait_for(lambda: all(registration_ids(n) == [] for n in cluster.masters))


def test_replace_with_ends_the_old_session_on_every_shard(cluster):
    [first, second, third] = cluster.masters
    gears(first.new_client(), "python", "GB().register('rw:*')", "ID", "rw1")
    gears(second.new_client(), "python", "GB().register('rw2:*')", "ID", "rw2",
          "REPLACE_WITH", "rw1")
    sessions = lambda n: [s[1] for s in n.client.execute_command("RG.PYDUMPSESSIONS")]
    assert wait_for(lambda: all(sessions(n) == ["rw2"] for n in cluster.masters))
    ids = registration_ids(first)
    assert len(ids) == 1 and all(registration_ids(n) == ids for n in cluster.masters)
    third.client.execute_command("RG.UNREGISTER", ids[0])
    assert wait_for(lambda: all(registration_ids(n) == [] for n in cluster.masters))


def test_a_registration_while_a_shard_does_not_answer_is_made_on_none(cluster):
    # A shard cut off (stopped) during a registration: the reply names it within the idle
    # time, and no shard has the registration, then or after the shard answers again.
    [first, second, third] = cluster.masters
    third_id = third.client.execute_command("CLUSTER", "MYID")
    os.kill(third.process.pid, signal.SIGSTOP)
    try:
        started = time.time()
        reply = first.new_client().execute_command("RG.PYEXECUTE", "GB().register('cut:*')")
        assert time.time() - started < 10
        assert [str(e) for e in reply] == [
            "Execution max idle reached (no answer from shard %s)" % third_id]
        assert registration_ids(first) == registration_ids(second) == []
    finally:
        os.kill(third.process.pid, signal.SIGCONT)
    assert wait_for(lambda: all(cluster._ok(n) for n in cluster.nodes))
    time.sleep(0.5)  # The stopped shard reads the prepare and the abort that waited for it.
    assert all(registration_ids(n) == [] for n in cluster.masters)
    assert all(n.client.execute_command("RG.PYDUMPSESSIONS") == [] for n in cluster.masters)
    # And the next registration is made everywhere.
    assert gears(first.new_client(), "python", "GB().register('cut:*')") == "OK"
    ids = registration_ids(first)
    assert wait_for(lambda: all(registration_ids(n) == ids for n in cluster.masters))
    first.client.execute_command("RG.UNREGISTER", ids[0])
    assert wait_for(lambda: all(registration_ids(n) == [] for n in cluster.masters))


def test_a_shard_killed_mid_run_is_named_within_the_idle_time():
    # kill -9 of a shard while every shard runs its part: the reply names it (no hang, no
    # partial answer), and the surviving shards go on serving.
    c = Cluster(masters=3, module_args=IDLE)
    try:
        client = c.client()
        for i in range(90):
            client.set("slow:%d" % i, i)
        [first, second, victim] = c.masters
        victim_id = victim.client.execute_command("CLUSTER", "MYID")
        assert all(n.client.dbsize() > 0 for n in c.masters)
        execution = first.new_client().execute_command(
            "RG.PYEXECUTE",
            "import time\n"
            "def slow(x):\n"
            "    time.sleep(0.1)\n"
            "    return x['key']\n"
            "GB().map(slow).repartition(lambda x: x).count().run('slow:*')", "UNBLOCKING")
        time.sleep(0.5)
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        killed = time.time()
        results = first.new_client().execute_command("RG.GETRESULTSBLOCKING", execution)
        assert time.time() - killed < 10
        [partial, errors] = results
        # No partial answer; every error names the dead shard (a send to it may fail first).
        assert partial == []
        assert "Execution max idle reached (no answer from shard %s)" % victim_id in errors
        assert set(errors) <= {
            "Execution max idle reached (no answer from shard %s)" % victim_id,
            "ERR could not send to shard %s (cluster bus)" % victim_id}
        assert first.client.ping() and second.client.ping()
    finally:
        c.stop()


def test_a_failover_keeps_registrations_firing_and_runs_whole():
    c = Cluster(masters=3, replicas=1, module_args=IDLE)
    try:
        masters = c.masters
        first = masters[0]
        assert gears(first.new_client(), "python",
                     "GB().foreach(lambda x: execute('incr', '{' + x['key'] + '}:n')).register('fo:*')") == "OK"
        client = c.client()
        keys = ["fo:%d" % i for i in range(12)]
        for key in keys:
            client.set(key, "1")
        assert wait_for(lambda: all(client.get("{%s}:n" % k) == "1" for k in keys))
        # The replicas have the registration too (sessions replicate).
        assert wait_for(lambda: all(len(n.client.execute_command("RG.DUMPREGISTRATIONS")) == 1
                                    for n in c.nodes))
        victim = masters[1]
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        survivors = [n for n in c.nodes if n is not victim]

        def promoted():
            slots = first.client.execute_command("CLUSTER", "SLOTS")
            owners = {r[2][1] for r in slots}
            return victim.port not in owners and all(
                "cluster_state:ok" in n.client.execute_command("CLUSTER", "INFO") for n in survivors)
        assert wait_for(promoted, timeout=30)
        time.sleep(1.5)  # Gears reads the new topology within a second.
        client = redis.RedisCluster(host="127.0.0.1", port=first.port, decode_responses=True)
        for key in keys:
            client.set(key, "2")
        # Every key's shard fired, the promoted replica included.
        assert wait_for(lambda: all(client.get("{%s}:n" % k) == "2" for k in keys), timeout=10)
        assert gears(first.new_client(), "python", "GB().count().run('fo:*')") == [["12"], []]
    finally:
        c.stop()


def test_a_node_added_later_gets_the_registrations(cluster):
    [first, second, third] = cluster.masters
    gears(first.new_client(), "python", "GB().register('late:*')", "ID", "late")
    node = RedisServer(port=cluster_port(), extra_args=IDLE, server_args=("--cluster-enabled", "yes", "--cluster-config-file",
                                                     "nodes.conf", "--cluster-node-timeout", "5000"))
    try:
        subprocess.run([REDIS_CLI, "--cluster", "add-node", "127.0.0.1:%d" % node.port,
                        "127.0.0.1:%d" % first.port], check=True, capture_output=True, timeout=60)
        assert wait_for(lambda: registration_ids(node) == registration_ids(first), timeout=20)
        assert [s[1] for s in node.client.execute_command("RG.PYDUMPSESSIONS")] == ["late"]
    finally:
        first.client.execute_command("RG.UNREGISTER", registration_ids(first)[0])
        node_id = node.client.execute_command("CLUSTER", "MYID")
        for n in cluster.nodes:
            try:
                n.client.execute_command("CLUSTER", "FORGET", node_id)
            except redis.RedisError:
                pass
        node.stop()


def test_execution_ids_parts_abort_and_drop_reach_every_shard(cluster):
    [first, second, third] = cluster.masters
    first_id = first.client.execute_command("CLUSTER", "MYID")
    c = first.new_client()
    eid = c.execute_command("RG.PYEXECUTE", "GB().count().run()", "UNBLOCKING")
    assert eid.startswith(first_id + "-")
    assert c.execute_command("RG.GETRESULTSBLOCKING", eid) == [["120"], []]
    # Every shard lists its part under the initiator's id.
    for node in (second, third):
        listed = {e[1]: e[3] for e in node.client.execute_command("RG.DUMPEXECUTIONS")}
        assert listed.get(eid) == "done", listed
    assert c.execute_command("RG.DROPEXECUTION", eid) == "OK"
    assert wait_for(lambda: all(eid not in [e[1] for e in n.client.execute_command("RG.DUMPEXECUTIONS")]
                                for n in (second, third)))
    # Aborted on the initiator: every shard's part stops.
    slow = c.execute_command("RG.PYEXECUTE", "import time\nGB().map(lambda x: time.sleep(0.2)).count().run()",
                             "UNBLOCKING")
    time.sleep(0.5)
    assert c.execute_command("RG.ABORTEXECUTION", slow) == "OK"
    for node in (second, third):
        assert wait_for(lambda: {e[1]: e[3] for e in node.client.execute_command("RG.DUMPEXECUTIONS")}
                        .get(slow) in ("done", "aborted"), timeout=5)
    assert wait_for(lambda: c.execute_command("RG.DUMPEXECUTIONS") and
                    {e[1]: e[3] for e in c.execute_command("RG.DUMPEXECUTIONS")}[slow] in ("done", "aborted"))


def test_getexecution_cluster_lists_every_shard(cluster, single):
    [first, second, third] = cluster.masters
    c = first.new_client()
    eid = c.execute_command("RG.PYEXECUTE", "GB().count().run()", "UNBLOCKING")
    assert c.execute_command("RG.GETRESULTSBLOCKING", eid) == [["120"], []]
    for reply in (c.execute_command("RG.GETEXECUTION", eid),
                  c.execute_command("RG.GETEXECUTION", eid, "CLUSTER")):
        shards = [entry[1] for entry in reply]
        assert sorted(shards) == sorted(n.client.execute_command("CLUSTER", "MYID") for n in cluster.masters)
        assert all(entry[2] == "execution_plan" and entry[3][1] == "done" for entry in reply)
    local = c.execute_command("RG.GETEXECUTION", eid, "SHARD")
    assert len(local) == 1 and local[0][1] == first.client.execute_command("CLUSTER", "MYID")
    assert "execution plan does not exist" in str(
        pytest.raises(redis.ResponseError, c.execute_command, "RG.GETEXECUTION", "nope", "CLUSTER").value)
    sid = single.client.execute_command("RG.PYEXECUTE", "GB().run()", "UNBLOCKING")
    single.client.execute_command("RG.GETRESULTSBLOCKING", sid)
    assert "no cluster detected" in str(
        pytest.raises(redis.ResponseError, single.client.execute_command, "RG.GETEXECUTION", sid, "CLUSTER").value)


def test_a_stream_registration_runs_on_each_stream_s_shard(cluster):
    [first, second, third] = cluster.masters
    gears(first.new_client(), "python",
          "GB('StreamReader').foreach(lambda x: execute('incr', '{' + x['key'] + '}:n'))"
          ".register('st:*', batch=2)")
    client = cluster.client()
    streams = ["st:%d" % i for i in range(9)]
    for stream in streams:
        client.xadd(stream, {"f": "1"})
        client.xadd(stream, {"f": "2"})
    assert wait_for(lambda: all(client.get("{%s}:n" % s) == "2" for s in streams))
    # Processed where each stream lives, and trimmed there.
    assert all(client.xlen(s) == 0 for s in streams)
    assert sum(1 for n in cluster.masters
               if any(n.client.exists("{%s}:n" % s) for s in streams if n.client.execute_command(
                   "CLUSTER", "COUNTKEYSINSLOT", n.client.execute_command("CLUSTER", "KEYSLOT", s)))) >= 2
    first.client.execute_command("RG.UNREGISTER", registration_ids(first)[0])
    assert wait_for(lambda: all(registration_ids(n) == [] for n in cluster.masters))
    for s in streams:
        client.delete(s, "{%s}:n" % s)


def test_overlapping_distributed_python_runs_all_answer(cluster):
    # A shard waiting for others' records does not hold Python's lock: the parts of other
    # executions on it run meanwhile.
    import threading
    replies = []

    def run(node):
        replies.append(gears(node.new_client(), "python",
                             "GB().repartition(lambda x: x['key']).count().run('key:*')"))

    threads = [threading.Thread(target=run, args=(node,)) for node in cluster.masters * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replies == [[["60"], []]] * 6


def test_concurrent_upgrades_end_the_same_on_every_shard(cluster):
    # Changes of one session from several shards at once happen one after the other: every
    # one answers OK, and every shard ends with the same last one.
    import threading
    masters = cluster.masters
    gears(masters[0].new_client(), "python", "GB().register('cu:*')", "ID", "cu")

    def descriptions():
        return [[(r[1], r[5]) for r in n.client.execute_command("RG.DUMPREGISTRATIONS")]
                for n in masters]
    try:
        for round in range(4):
            replies = {}

            def upgrade(node, n):
                replies[n] = node.new_client().execute_command(
                    "RG.PYEXECUTE", "GB(desc='v%d-%d').register('cu:*')" % (round, n),
                    "ID", "cu", "UPGRADE")

            threads = [threading.Thread(target=upgrade, args=(node, n))
                       for n, node in enumerate(masters)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert replies == {0: "OK", 1: "OK", 2: "OK"}
            assert wait_for(lambda: all(d == descriptions()[0] for d in descriptions()))
            [[(_, description)]] = descriptions()[:1]
            assert description in ["v%d-%d" % (round, n) for n in range(3)]
            assert all([s[1] for s in n.client.execute_command("RG.PYDUMPSESSIONS")] == ["cu"]
                       for n in masters)
    finally:
        for node in masters:
            for rid in registration_ids(node):
                try:
                    node.client.execute_command("RG.UNREGISTER", rid)
                except redis.RedisError:
                    pass
        assert wait_for(lambda: all(registration_ids(n) == [] for n in masters))


def test_pause_refused_inside_multi_changes_nothing_anywhere(cluster):
    [first, second, third] = cluster.masters
    assert gears(first.new_client(), "python", "GB('StreamReader').register('pm:*')") == "OK"
    [rid] = registration_ids(first)

    def statuses():
        return [[dict(zip(r[7][0::2], r[7][1::2]))["status"]
                 for r in n.client.execute_command("RG.DUMPREGISTRATIONS")] for n in cluster.masters]
    pipe = second.new_client().pipeline(transaction=True)
    pipe.execute_command("RG.PAUSEREGISTRATIONS", rid)
    [reply] = pipe.execute(raise_on_error=False)
    assert str(reply) == "Can not run gears inside a multi exec, lua, or when blocking is not allowed"
    assert statuses() == [["OK"]] * 3
    # Outside MULTI it pauses every shard, and unpauses them.
    assert second.client.execute_command("RG.PAUSEREGISTRATIONS", rid) == "OK"
    assert statuses() == [["PAUSED"]] * 3
    assert third.client.execute_command("RG.UNPAUSEREGISTRATIONS", rid) == "OK"
    assert statuses() == [["OK"]] * 3
    first.client.execute_command("RG.UNREGISTER", rid)
    assert wait_for(lambda: all(registration_ids(n) == [] for n in cluster.masters))
