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


def py_error(frame, message, line=1):
    """RedisGears 1.2's Python error text: the repr of the traceback's lines."""
    return str(["Traceback (most recent call last):\n",
                '  File "<string>", line %d, in %s\n' % (line, frame),
                message + "\n"])
