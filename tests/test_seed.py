"""The seed examples of the product brief, end to end against a real redis-server."""
import os
import subprocess
import threading
import time

import pytest

from helpers import gears

USERS = {
    "user:1": {"name": "Alice", "age": "30"},
    "user:2": {"name": "Bob", "age": "40"},
    "user:3": {"name": "Carol", "age": "50"},
    "user:4": {"name": "Dan", "age": "20"},
}

FILTER_DELETE = {
    "python": "GearsBuilder().filter(lambda x: int(x['value']['age']) > 35)"
              ".foreach(lambda x: execute('del', x['key'])).run('user:*')",
    "lua": "GearsBuilder():filter(function(x) return tonumber(x.value.age) > 35 end)"
           ":foreach(function(x) execute('del', x.key) end):run('user:*')",
    "rhai": 'GearsBuilder().filter(|x| parse_int(x.value.age) > 35)'
            '.foreach(|x| execute("del", x.key)).run("user:*")',
}

SUM_AGES = {
    "python": "GB().map(lambda x: int(x['value']['age'])).accumulate(lambda a, x: (a or 0) + x).run('user:*')",
    "lua": "GB():map(function(x) return tonumber(x.value.age) end)"
           ":accumulate(function(a, x) return (a or 0) + x end):run('user:*')",
    "rhai": 'GB().map(|x| parse_int(x.value.age)).accumulate(|a, x| if a == () { x } else { a + x }).run("user:*")',
}

NUMPY_ONE_LINER = (
    "import numpy; GearsBuilder()"
    ".map(lambda x: numpy.array([int(x['value']['x']), int(x['value']['y']), int(x['value']['z'])]))"
    ".accumulate(lambda a, x: x if a is None else numpy.mean([a, x], axis=0))"
    ".flatmap(lambda x: x.tolist()).run(\"vec:*\")"
)

NUMPY_SCRIPT = '''import numpy


def to_vector(record):
    value = record['value']
    return numpy.array([int(value['x']), int(value['y']), int(value['z'])])


def mean(accumulated, vector):
    if accumulated is None:
        return vector
    return numpy.mean([accumulated, vector], axis=0)


GearsBuilder().map(to_vector).accumulate(mean).flatmap(lambda x: x.tolist()).run("vec:*")
'''


def load_users(r):
    for key, fields in USERS.items():
        r.hset(key, mapping=fields)


def load_vectors(r):
    r.execute_command("HSET", "vec:1", "x", "10", "y", "5", "z", "23")
    r.execute_command("HSET", "vec:2", "x", "2", "y", "5", "z", "5")


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_filter_and_delete_old_users(r, language):
    load_users(r)
    results, errors = gears(r, language, FILTER_DELETE[language])
    assert sorted(results) == [
        "{'event': None, 'key': 'user:2', 'type': 'hash', 'value': {'age': '40', 'name': 'Bob'}}",
        "{'event': None, 'key': 'user:3', 'type': 'hash', 'value': {'age': '50', 'name': 'Carol'}}",
    ]
    assert errors == []
    assert sorted(r.keys("user:*")) == ["user:1", "user:4"]


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_map_accumulate_sums_ages(r, language):
    load_users(r)
    assert gears(r, language, SUM_AGES[language]) == [["140"], []]


def test_numpy_one_liner(r):
    load_vectors(r)
    assert gears(r, "python", NUMPY_ONE_LINER) == [["14.0", "5.0", "6.0"], []]


def test_numpy_script_file_through_redis_cli(r, server, tmp_path):
    load_vectors(r)
    script = tmp_path / "script.py"
    script.write_text(NUMPY_SCRIPT)
    with open(script) as f:
        out = subprocess.run(
            ["redis-cli", "-p", str(server.port), "-x", "RG.PYEXECUTE"],
            stdin=f, capture_output=True, text=True, timeout=60,
        )
    assert out.returncode == 0, out.stderr
    # redis-cli without a terminal prints one element per line; the empty errors array is a blank line.
    assert out.stdout.split("\n") == ["14.0", "5.0", "6.0", "", ""]


def test_numpy_script_through_redis_py(r):
    load_vectors(r)
    assert r.execute_command("RG.PYEXECUTE", NUMPY_SCRIPT) == [["14.0", "5.0", "6.0"], []]


def test_numpy_comes_from_the_module_venv(r):
    script = "import numpy, sys; GB('ShardsIDReader').map(lambda x: numpy.__file__.startswith(sys.prefix)).run()"
    assert gears(r, "python", script) == [["True"], []]


def test_ping_answers_while_a_five_second_job_runs(server):
    job_client = server.new_client()
    job_result = {}

    def run_job():
        job_result["reply"] = job_client.execute_command(
            "RG.PYEXECUTE",
            "import time\nGB('ShardsIDReader').foreach(lambda x: time.sleep(5)).run()",
        )

    job = threading.Thread(target=run_job)
    started = time.monotonic()
    job.start()
    time.sleep(0.3)
    ping_client = server.new_client()
    latencies = []
    while job.is_alive() and time.monotonic() - started < 4.5:
        t0 = time.monotonic()
        assert ping_client.ping()
        latencies.append(time.monotonic() - t0)
        time.sleep(0.05)
    job.join(timeout=30)
    elapsed = time.monotonic() - started
    assert job_result["reply"] == [["1"], []]
    assert elapsed >= 5.0
    assert len(latencies) > 20
    assert max(latencies) < 0.5, "PING took %.3fs during the job" % max(latencies)


def test_python_runs_in_the_configured_venv(r):
    from conftest import VENV
    script = "import sys; GB('ShardsIDReader').map(lambda x: sys.prefix).run()"
    assert gears(r, "python", script) == [[VENV], []]
