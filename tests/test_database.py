"""An execution reads and writes the database its caller selected."""
import pytest

from helpers import gears

DELETE_OLD_USERS = {
    "python": "GB().filter(lambda x: int(x['value']) > 35).foreach(lambda x: execute('del', x['key'])).run('user:*')",
    "lua": "GB():filter(function(x) return tonumber(x.value) > 35 end):foreach(function(x) execute('del', x.key) end):run('user:*')",
    "rhai": 'GB().filter(|x| parse_int(x.value) > 35).foreach(|x| execute("del", x.key)).run("user:*")',
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_executions_use_the_selected_database(server, r, language):
    db0 = server.new_client(db=0)
    db3 = server.new_client(db=3)
    db0.set("user:1", "50")
    db3.set("user:1", "50")
    db3.set("user:2", "20")
    results, errors = gears(db3, language, DELETE_OLD_USERS[language])
    assert (len(results), errors) == (1, [])
    assert db3.keys("*") == ["user:2"]
    assert db0.get("user:1") == "50"


def test_each_client_keeps_its_database(server, r):
    clients = {db: server.new_client(db=db) for db in (0, 1, 2)}
    for db, client in clients.items():
        client.set("k", "in db %d" % db)
    for db, client in clients.items():
        assert gears(client, "lua", "GB():map(function(x) return x.value end):run('k')") == \
            [["in db %d" % db], []]
        assert gears(client, "python", "execute('SET', 'w', 'x')") == "OK"
        assert client.get("w") == "x"
    assert all(c.dbsize() == 2 for c in clients.values())


SELECT_THEN_WRITE = {
    "python": ("def f(x):\n"
               "    execute('SELECT', '5')\n"
               "    execute('SET', 'copy', x['value'])\n"
               "    return x['value']\n"
               "GB().map(f).run('k')"),
    "lua": ("GB():map(function(x) execute('SELECT', '5') execute('SET', 'copy', x.value) "
            "return x.value end):run('k')"),
    "rhai": ('GB().map(|x| { execute("SELECT", "5"); execute("SET", "copy", x.value); x.value })'
             '.run("k");'),
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_select_in_a_script_changes_the_database_of_its_later_commands(server, r, language):
    # As in a Lua script: the execution's later commands use the new database; the caller's
    # connection and what the reader reads do not change.
    db2 = server.new_client(db=2)
    db2.set("k", "v")
    assert gears(db2, language, SELECT_THEN_WRITE[language]) == [["v"], []]
    assert server.new_client(db=5).get("copy") == "v"
    assert db2.get("copy") is None
    assert db2.execute_command("CLIENT", "INFO").split(" db=")[1].split(" ")[0] == "2"


def test_select_errors_are_redis_errors(server, r):
    script = ("def f(x):\n"
              "    try:\n"
              "        execute('SELECT', '%s')\n"
              "    except Exception as e:\n"
              "        return str(e)\n"
              "GB('ShardsIDReader').map(f).run()")
    assert gears(r, "python", script % "100000") == [["ERR DB index is out of range"], []]
    assert gears(r, "python", script % "x") == [["ERR value is not an integer or out of range"], []]
    # The failed SELECTs changed nothing.
    assert gears(r, "python", "execute('SET', 'here', '1')") == "OK"
    assert r.get("here") == "1"
