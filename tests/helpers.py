"""Helpers shared by the integration tests."""
import redis

EXECUTE = {"python": "RG.PYEXECUTE", "lua": "RG.LUAEXECUTE", "rhai": "RG.RHAIEXECUTE"}


def gears(client, language, script, *options):
    """Runs a script; returns the raw reply (redis errors are raised)."""
    return client.execute_command(EXECUTE[language], script, *options)


def gears_error(client, language, script, *options):
    """Runs a script that must fail; returns the error text."""
    try:
        reply = client.execute_command(EXECUTE[language], script, *options)
    except redis.ResponseError as e:
        return str(e)
    raise AssertionError("expected an error reply, got %r" % (reply,))
