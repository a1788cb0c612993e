"""Cases found in review: each must give a correct reply and leave the server answering."""
import time

import pytest
import redis

from helpers import gears, py_error


def test_a_panic_inside_an_atomic_block_releases_the_redis_lock(r):
    script = ("P = [c for c in BaseException.__subclasses__() if c.__name__ == 'PanicException'][0]\n"
              "atomic().__enter__()\n"
              "raise P('boom')")
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("RG.PYEXECUTE", script)
    assert str(e.value) == "Gears internal error: boom"
    assert r.ping()
    assert gears(r, "python", "GB('ShardsIDReader').run()") == [["1"], []]


def test_an_atomic_block_left_open_ends_with_its_callback(r):
    script = ("def f(x):\n"
              "    if x == 0:\n"
              "        atomic().__enter__()\n"
              "    else:\n"
              "        with atomic():\n"
              "            pass\n"
              "    return x\n"
              "GB('PythonReader').map(f).run(lambda: iter(range(3)))")
    assert gears(r, "python", script) == [["0", "1", "2"], []]


@pytest.mark.parametrize("convert", ["True", "False"])
def test_deeply_nested_results_are_an_error_not_a_crash(r, convert):
    script = ("import functools\n"
              "GB('ShardsIDReader').map(lambda x: functools.reduce(lambda a, _: [a], range(300000), []))"
              ".run(convertToStr=%s)" % convert)
    results, errors = gears(r, "python", script)
    assert results == []
    assert len(errors) == 1
    assert "RecursionError" in errors[0] or "nested deeper than 512 levels" in errors[0]


def test_reading_does_not_change_stored_strings(r):
    r.set("s", "hello")
    r.set("n", "12345")
    before = [r.object("encoding", "s"), r.object("encoding", "n")]
    assert sorted(gears(r, "python", "GB().map(lambda x: x['value']).run()")[0]) == ["12345", "hello"]
    assert [r.object("encoding", "s"), r.object("encoding", "n")] == before == ["embstr", "int"]


@pytest.mark.parametrize("language, script", [
    ("python", "GB().map(lambda x: x['key']).run()"),
    ("python", "GB('KeysOnlyReader').run()"),
    ("lua", "GB():map(function(x) return x.key end):run()"),
])
def test_expired_keys_are_not_read(r, language, script):
    r.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    try:
        r.set("live", "1")
        r.set("gone", "1", px=20)
        time.sleep(0.1)
        assert gears(r, language, script) == [["live"], []]
    finally:
        r.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "1")


def test_generator_records_before_an_exception_are_kept(r):
    script = ("def gen():\n"
              "    yield 1\n"
              "    yield 2\n"
              "    raise Exception('x')\n"
              "GB('PythonReader').run(gen)")
    assert gears(r, "python", script) == [["1", "2"], [str([
        "Traceback (most recent call last):\n",
        '  File "<string>", line 4, in gen\n',
        "Exception: x\n"])]]


def test_a_failing_zero_copy_keeps_the_accumulator(r):
    script = ("class Zero(object):\n"
              "    def __bool__(self):\n"
              "        return False\n"
              "    def __deepcopy__(self, memo):\n"
              "        raise ValueError('no copy')\n"
              "GB('PythonReader').aggregate(Zero(), lambda a, r: r if isinstance(a, Zero) else a + r,"
              " lambda a, r: r).run(lambda: iter([1, 2]))")
    results, errors = gears(r, "python", script)
    assert results == []
    assert len(errors) == 2 and all("ValueError: no copy" in e for e in errors)
