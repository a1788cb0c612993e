"""The shared scenario table (tests/scenarios.py), run on a 3-master loopback cluster in every
language: each scenario's data goes to the shards that own its keys, the script is sent to one
master, and the reply must be the single instance's (results in any order where SCAN order,
and so the order in which shards answer, is undefined)."""
import pytest

from cluster import Cluster
from helpers import gears
from scenarios import SCENARIOS

LANGUAGES = ["python", "lua", "rhai"]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(masters=3)
    yield c
    alive = all(n.alive() for n in c.nodes)
    c.stop()
    assert alive, "a cluster node died"


# What runs on every shard by design (as in RedisGears 1.2), so its reply on N shards is not a
# single instance's: the generator readers (`ShardsIDReader`: one record per shard;
# `PythonReader`: the generator runs on every shard), the local operations (`accumulate` and
# `localgroupby` give one result per shard unless a `collect` comes first), and a callback's
# `execute()` on a key another shard owns (refused: `ERR Attempted to access a non local key`).
PER_SHARD = {
    "ShardsIDReader on a single node": "one record per shard",
    "generator reader": "the generator runs on every shard",
    "flatmap of a non-list is one record": "a generator reader",
    "flatmap emits a list last-to-first": "a generator reader",
    "convertToStr=False prints floats as %lf": "a generator reader",
    "max age with map and accumulate": "accumulate is local to each shard",
    "localgroupby": "localgroupby is local to each shard",
    "execute returns Redis replies": "execute() on another shard's key is refused",
}


def ordered(script):
    """True when the script's results have a defined order whatever the shards."""
    return any(op in script for op in ("sort(", "Sort", "StreamReader", "PythonReader"))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[sc["name"] for sc in SCENARIOS])
def test_scenario_on_three_shards(cluster, scenario, language):
    if scenario["name"] in PER_SHARD:
        pytest.skip("per shard by design: " + PER_SHARD[scenario["name"]])
    client = cluster.client()
    script = scenario["scripts"][language]
    expected = scenario["expected"]
    for node in cluster.masters:
        # Each run starts from the scenario's data (a script may delete it).
        for master in cluster.masters:
            master.client.flushall()
        for command in scenario["setup"]:
            client.execute_command(*command)
        reply = gears(node.new_client(), language, script)
        if isinstance(reply, list) and len(reply) == 2 and not ordered(script):
            reply = [sorted(map(str, reply[0])), reply[1]]
            want = [sorted(map(str, expected[0])), expected[1]]
        else:
            want = expected
        assert reply == want, node.port
