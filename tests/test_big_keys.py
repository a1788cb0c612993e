"""A key of any size is read without holding the Redis lock for long: large values are read in
slices, and values no step looks at are not read at all."""
import threading
import time

import pytest

from helpers import gears

FILL_HASH = """
for i = 0, 999 do
  local args = {}
  for j = 1, 1000 do
    args[#args + 1] = 'f' .. (i * 1000 + j)
    args[#args + 1] = 'v'
  end
  redis.call('HSET', KEYS[1], unpack(args))
end
"""
FILL_LIST = """
for i = 0, 999 do
  local args = {}
  for j = 1, 1000 do args[#args + 1] = i * 1000 + j end
  redis.call('RPUSH', KEYS[1], unpack(args))
end
"""


@pytest.fixture(scope="module")
def big(server):
    # A run over the hash of 1,000,000 fields takes about 5 s here: past redis-py 8's default
    # socket timeout (5 s), which is not what these tests measure.
    client = server.new_client(socket_timeout=60)
    client.flushall()
    client.eval(FILL_HASH, 1, "big:hash")
    client.eval(FILL_LIST, 1, "big:list")
    client.set("big:string", "x" * (24 << 20))
    yield client
    client.flushall()


def worst_ping_during(server, action):
    """Runs `action` while another client PINGs; returns (action's result, worst PING time)."""
    stop = threading.Event()
    worst = [0.0]

    def ping():
        client = server.new_client()
        while not stop.is_set():
            started = time.perf_counter()
            client.ping()
            worst[0] = max(worst[0], time.perf_counter() - started)
            time.sleep(0.001)

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        result = action()
    finally:
        stop.set()
        pinger.join()
    return result, worst[0]


@pytest.mark.parametrize("language, script, expected", [
    ("python", "GB().map(lambda x: len(x['value'])).run('big:hash')", [["1000000"], []]),
    ("python", "GB().map(lambda x: [len(x['value']), x['value'][-1]]).run('big:list')", [["[1000000, '1000000']"], []]),
    ("lua", "GB():map(function(x) return #x.value end):run('big:string')", [[str(24 << 20)], []]),
    ("python", "GB().map(lambda x: x['value']['f777777']).run('big:hash')", [["v"], []]),
])
def test_large_values_are_read_in_slices(server, big, language, script, expected):
    reply, worst = worst_ping_during(server, lambda: gears(big, language, script))
    assert reply == expected
    # HGETALL of the hash alone stalls every client for about 0.6 s.
    assert worst < 0.1, "a client waited %.3f s" % worst


def test_values_no_step_reads_are_not_read(server, big):
    started = time.perf_counter()
    reply, worst = worst_ping_during(server, lambda: gears(big, "python", "GB().count().run('big:*')"))
    assert reply == [["3"], []]
    assert time.perf_counter() - started < 0.5
    assert worst < 0.1


def test_a_value_deleted_while_it_is_read_is_skipped(server, big):
    big.eval(FILL_HASH, 1, "big:gone")
    deleter = threading.Timer(0.02, lambda: server.new_client().delete("big:gone"))
    deleter.start()
    results, errors = gears(big, "python", "GB().map(lambda x: len(x['value'])).run('big:gone')")
    deleter.join()
    assert errors == []
    assert results in ([], ["1000000"])
    assert big.exists("big:gone") == 0


@pytest.mark.parametrize("fill, script, expected", [
    # Few elements, each large: sliced by bytes, not by element count.
    (lambda c: c.rpush("few:list", *[b"x" * (1 << 20)] * 300),
     "GB().map(lambda x: [len(x['value']), len(x['value'][0])]).run('few:list')", [["[300, 1048576]"], []]),
    (lambda c: c.hset("few:hash", mapping={"f%d" % i: b"y" * 100000 for i in range(1000)}),
     "GB().map(lambda x: len(x['value'])).run('few:hash')", [["1000"], []]),
    (lambda c: [c.xadd("few:stream", {"f": b"z" * 25000}) for _ in range(4096)],
     "GB('StreamReader').count().run('few:stream')", [["4096"], []]),
])
def test_values_of_few_large_elements_are_read_in_slices(server, fill, script, expected):
    client = server.new_client()
    fill(client)
    reply, worst = worst_ping_during(server, lambda: gears(client, "python", script))
    assert reply == expected
    assert worst < 0.1, "a client waited %.3f s" % worst
    client.delete("few:list", "few:hash", "few:stream")


def test_many_empty_elements_weigh_in_the_budgets(server):
    """Each element counts for more than its bytes: a list of empty strings (0 bytes) was read
    whole in one hold of the lock, in a run (seconds for 20 million elements) and in a sync
    registration's event."""
    client = server.new_client()
    for _ in range(200):
        client.rpush("empty:list", *[""] * 10000)
    client.hset("empty:hash", mapping={"f%d" % i: "" for i in range(20000)})
    # A run reads the 2,000,000 elements in slices.
    reply, worst = worst_ping_during(server, lambda: gears(
        client, "python", "GB().map(lambda x: len(x['value'])).run('empty:*')"))
    assert sorted(reply[0]) == ["20000", "2000000"] and reply[1] == []
    assert worst < 0.1, "a client waited %.3f s" % worst
    # A sync run holds the lock all along: it gets no value past the batch budget (10,000
    # empty strings are past it; 1,000 are not).
    client.delete("empty:list")
    client.rpush("empty:small", *[""] * 1000)
    assert gears(client, "python", "GB().map(lambda x: 'none' if x['value'] is None "
                 "else len(x['value'])).register(prefix='empty:*', eventTypes=['rpush'], "
                 "mode='sync')") == "OK"
    client.rpush("empty:small", "")
    client.rpush("empty:list", *[""] * 10000)
    runs = [dict(zip(e[::2], e[1::2])) for e in client.execute_command("RG.DUMPEXECUTIONS")]
    results = [client.execute_command("RG.GETRESULTS", run["executionId"])
               for run in runs if run["registered"] == 1]
    assert results == [[["1001"], []], [["none"], []]]
    for registration in client.execute_command("RG.DUMPREGISTRATIONS"):
        client.execute_command("RG.UNREGISTER", registration[1])
    client.delete("empty:hash", "empty:small", "empty:list")
