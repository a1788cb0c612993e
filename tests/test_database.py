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
