"""Binary safety: key names, field names and values that are not UTF-8 round-trip byte for byte
through every reader, every language and `execute()`, and two different keys are never shown as
the same key."""
import pytest

from helpers import gears

TARGET = b"t:bin\xff\xfe"
# The UTF-8 encoding of two U+FFFD: what a lossy decoding of TARGET would show.
BYSTANDER = b"t:bin\xef\xbf\xbd\xef\xbf\xbd"

DELETE_TARGET = {
    # Python: names that are not UTF-8 are bytes.
    "python": "GB().filter(lambda x: x['key'] == b't:bin\\xff\\xfe').foreach(lambda x: execute('del', x['key'])).run('t:bin*')",
    # Lua: strings are bytes.
    "lua": "GB():filter(function(x) return x.key == 't:bin\\255\\254' end):foreach(function(x) execute('del', x.key) end):run('t:bin*')",
    # Rhai: names that are not UTF-8 are blobs.
    "rhai": 'GB().filter(|x| type_of(x.key) == "blob").foreach(|x| execute("del", x.key)).run("t:bin*")',
}


@pytest.fixture
def rb(server, r):
    """A client that does not decode replies."""
    return server.new_client(decode_responses=False)


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_a_binary_key_is_never_confused_with_another(rb, language):
    rb.set(TARGET, "target")
    rb.set(BYSTANDER, "bystander")
    results, errors = gears(rb, language, DELETE_TARGET[language])
    assert errors == [] and len(results) == 1
    assert rb.get(TARGET) is None
    assert rb.get(BYSTANDER) == b"bystander"


KEYS_AS_BYTES = {
    "python": "GB().map(lambda x: x['key']).run('t:bin*', convertToStr=False)",
    "lua": "GB():map(function(x) return x.key end):run('t:bin*', {convertToStr=false})",
    "rhai": 'GB().map(|x| x.key).run("t:bin*", #{convertToStr: false})',
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_key_names_reach_the_reply_byte_for_byte(rb, language):
    rb.set(TARGET, "1")
    rb.set(BYSTANDER, "2")
    results, errors = gears(rb, language, KEYS_AS_BYTES[language])
    assert errors == []
    assert sorted(results) == sorted([TARGET, BYSTANDER])


def test_python_shows_bytes_names_as_bytes(rb):
    rb.set(TARGET, b"v\xff")
    assert gears(rb, "python", "GB().run('t:bin*')") == \
        [[b"{'event': None, 'key': b't:bin\\xff\\xfe', 'type': 'string', 'value': b'v\\xff'}"], []]


BINARY_FIELDS = {
    # The value of field b"f\xff" and the value of field "ok", read from the record.
    "python": "GB().map(lambda x: [x['value'][b'f\\xff'], x['value']['ok']]).run('h', convertToStr=False)",
    "lua": "GB():map(function(x) return {x.value['f\\255'], x.value.ok} end):run('h', {convertToStr=false})",
    # Rhai maps have string keys: a hash with a field name that is not UTF-8 arrives as an array
    # of [name, value] pairs, names as blobs.
    "rhai": 'GB().map(|x| { let v = []; for pair in x.value { if type_of(pair[0]) == "blob" { v.insert(0, pair[1]) } else { v.push(pair[1]) } } v }).run("h", #{convertToStr: false})',
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_binary_hash_fields_round_trip(rb, language):
    rb.hset("h", mapping={b"f\xff": b"v\xfe", b"ok": b"fine"})
    results, errors = gears(rb, language, BINARY_FIELDS[language])
    assert errors == []
    assert results == [[b"v\xfe", b"fine"]]


COPY_HASH = {
    # Copies every field of h into h2 with execute(): names and values byte for byte.
    "python": "GB().foreach(lambda x: [execute('HSET', 'h2', k, v) for k, v in x['value'].items()]).run('h')",
    "lua": "GB():foreach(function(x) for k, v in pairs(x.value) do execute('HSET', 'h2', k, v) end end):run('h')",
    "rhai": 'GB().foreach(|x| { for pair in x.value { execute("HSET", "h2", pair[0], pair[1]); } }).run("h")',
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_binary_data_round_trips_through_execute(rb, language):
    fields = {b"f\xff": b"v\xfe\x00", b"\x00\x01": b"\xc3\x28", b"plain": b"text"}
    rb.hset("h", mapping=fields)
    results, errors = gears(rb, language, COPY_HASH[language])
    assert errors == []
    assert rb.hgetall("h2") == fields


STREAM_VALUES = {
    "python": "GB('StreamReader').map(lambda x: x['value'][b'f\\xff']).run('s', convertToStr=False)",
    "lua": "GB('StreamReader'):map(function(x) return x.value['f\\255'] end):run('s', {convertToStr=false})",
    "rhai": 'GB("StreamReader").map(|x| x.value[0][1]).run("s", #{convertToStr: false})',
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_binary_stream_fields_round_trip(rb, language):
    rb.xadd("s", {b"f\xff": b"v\xfe"})
    assert gears(rb, language, STREAM_VALUES[language]) == [[b"v\xfe"], []]


def test_binary_values_from_execute_replies(rb):
    rb.set("bin", b"\x00\xff\xfe")
    script = "GB('ShardsIDReader').map(lambda x: execute('SET', 'copy', execute('GET', 'bin'))).run()"
    assert gears(rb, "python", script) == [[b"OK"], []]
    assert rb.get("copy") == b"\x00\xff\xfe"


READ_BINARY_NAMED = {
    # Readers take key names and patterns that are not UTF-8: bytes in Python, strings in Lua,
    # blobs in Rhai.
    "python": ("GB().map(lambda x: x['value']).run(b'k\\xff', convertToStr=False)",
               "GB('StreamReader').map(lambda x: x['key']).run(b's\\xff', convertToStr=False)"),
    "lua": ("GB():map(function(x) return x.value end):run('k\\255', {convertToStr=false})",
            "GB('StreamReader'):map(function(x) return x.key end):run('s\\255', {convertToStr=false})"),
    "rhai": ('let k = blob(); k.push(107); k.push(255); GB().map(|x| x.value).run(k, #{convertToStr: false});',
             'let s = blob(); s.push(115); s.push(255); GB("StreamReader").map(|x| x.key).run(s, #{convertToStr: false});'),
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_readers_take_binary_key_names(rb, language):
    rb.set(b"k\xff", b"target")
    rb.set(b"k\xef\xbf\xbd", b"other key")
    rb.xadd(b"s\xff", {b"f": b"v"})
    rb.xadd(b"s\xef\xbf\xbd", {b"f": b"other"})
    keys_script, stream_script = READ_BINARY_NAMED[language]
    assert gears(rb, language, keys_script) == [[b"target"], []]
    assert gears(rb, language, stream_script) == [[b"s\xff"], []]


GROUP_BY_KEY = {
    "python": "GB().countby(lambda x: x['key']).map(lambda r: [r['key'], r['value']]).run('*', convertToStr=False)",
    "lua": "GB():countby(function(x) return x.key end):map(function(r) return {r.key, r.value} end):run('*', {convertToStr=false})",
    "rhai": 'GB().countby(|x| x.key).map(|r| [r.key, r.value]).run("*", #{convertToStr: false})',
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_a_binary_key_and_its_repr_are_different_groups(rb, language):
    rb.set(b"k\xff", "1")
    rb.set(b"b'k\\xff'", "2")
    results, errors = gears(rb, language, GROUP_BY_KEY[language])
    assert errors == []
    assert sorted(results) == sorted([[b"k\xff", 1], [b"b'k\\xff'", 1]])
