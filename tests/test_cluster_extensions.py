"""Native extensions on Redis Cluster: native steps, extractors and readers ship to every shard
by name and arguments (each shard compiles the script against its own extensions) and give the
reply one instance gives; a shard that lacks the extension refuses the execution with an error
naming it and the operator."""
import pytest

from cluster import Cluster
from conftest import EXTENDED_MODULE, RedisServer
from helpers import gears

IDLE = ("ExecutionMaxIdleTime", "3000")
NAMES = 17


def load(client):
    for i in range(60):
        client.hset("user:%d" % i, mapping={"name": "u%d" % (i % NAMES), "age": str(20 + i % 40)})
    client.zadd("lb", {"a": 10, "b": 55, "c": 70, "d": 52, "e": 99.5, "f": 120, "g": 149})


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(masters=3, module_args=IDLE, node_module=lambda i: EXTENDED_MODULE)
    load(c.client())
    yield c
    alive = all(n.alive() for n in c.nodes)
    c.stop()
    assert alive, "a cluster node died"


@pytest.fixture(scope="module")
def single():
    s = RedisServer(extra_args=IDLE, module=EXTENDED_MODULE)
    load(s.new_client())
    yield s
    s.stop()


SCENARIOS = [
    ("python", "GB().native('hll_count', 'name').run('user:*')"),
    ("lua", "GB():native('hll_count', 'name'):run('user:*')"),
    ("rhai", 'GB().native("hll_count", "name").run("user:*")'),
    ("python", "GB().map(lambda x: x['value']['name']).native('hll_count').run('user:*')"),
    ("python", "GB('zset_entries').native('entry_member').run('lb')"),
    ("lua", "GB('zset_entries'):native('score_at_least', 60):native('entry_member'):run('lb', {batch=2})"),
    ("rhai", 'GB("zset_entries").native("entry_member").run("lb", #{batch: 3})'),
    ("python", "GB('zset_entries').repartition(native('score_bucket', 25)).native('entry_member').run('lb')"),
    ("python", "GB('zset_entries').groupby(native('score_bucket', 50), lambda k, a, r: (a or 0) + 1).run('lb')"),
    ("lua", "GB('zset_entries'):countby(native('score_bucket', 50)):run('lb')"),
    ("rhai", 'GB("zset_entries").batchgroupby(native("score_bucket", 50), |k, rs| rs.len()).run("lb")'),
]


def normalized(reply):
    results, errors = reply
    return sorted(map(str, results)), errors


@pytest.mark.parametrize("language,script", SCENARIOS)
def test_every_shard_answers_as_a_single_instance(cluster, single, language, script):
    expected = gears(single.new_client(), language, script)
    assert expected[1] == [] and expected[0], expected
    for node in cluster.masters:
        assert normalized(gears(node.new_client(), language, script)) == normalized(expected), \
            node.port


def test_the_counts(cluster):
    node = cluster.masters[2]
    assert gears(node.new_client(), "lua", "GB():native('hll_count', 'name'):run('user:*')") == [
        [str(NAMES)], []]
    # Every shard has users: three partial sketches were merged.
    assert all(n.client.dbsize() > 0 for n in cluster.masters)


def test_a_shard_without_the_extension_refuses_the_execution():
    # Node 2 loads plain libgears.so: it has no native operators or readers.
    c = Cluster(masters=3, module_args=IDLE,
                node_module=lambda i: None if i == 2 else EXTENDED_MODULE)
    try:
        load(c.client())
        lacking = c.nodes[2]
        lacking_id = lacking.client.execute_command("CLUSTER", "MYID")
        unknown = ("unknown native operator 'hll_count' "
                   "(this server has no native operators or readers)")
        for node in c.nodes[:2]:
            for language, script, error in [
                ("lua", "GB():native('hll_count', 'name'):run('user:*')",
                 "shard %s: script:1: %s" % (lacking_id, unknown)),
                ("rhai", 'GB().native("hll_count", "name").run("user:*")',
                 "shard %s: %s (line 1, position 6)" % (lacking_id, unknown)),
            ]:
                results, errors = gears(node.new_client(), language, script)
                assert results == [] and errors == [error], (node.port, results, errors)
        # On the shard that lacks it, the script fails at once.
        assert gears(lacking.new_client(), "lua", "GB():count():run('user:*')") == [["60"], []]
        assert all(n.alive() for n in c.nodes)
    finally:
        c.stop()
