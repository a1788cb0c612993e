"""Helpers shared by the integration tests."""
import socket
import time

import redis

EXECUTE = {"python": "RG.PYEXECUTE", "lua": "RG.LUAEXECUTE", "rhai": "RG.RHAIEXECUTE"}


def gears(client, language, script, *options):
    """Runs a script; returns the raw reply (redis errors are raised)."""
    return client.execute_command(EXECUTE[language], script, *options)


def gears_error(client, language, script, *options):
    """Runs a script that must fail; returns the error text."""
    return raw_error(client, EXECUTE[language], script, *options)


def py_error(frame, message, line=1):
    """RedisGears 1.2's Python error text: the repr of the traceback's lines."""
    return str(["Traceback (most recent call last):\n",
                '  File "<string>", line %d, in %s\n' % (line, frame),
                message + "\n"])


def wrapped(language, text, line=1, position=1, frame="<module>"):
    """The text of an error raised by `execute()` at the top level of a script, as each
    language reports it: Python's traceback list, Lua's `script:LINE: text`, Rhai's
    `text (line L, position P)`."""
    if language == "python":
        return py_error(frame, "gears.error: " + text, line)
    if language == "lua":
        return "script:%d: %s" % (line, text)
    return "%s (line %d, position %d)" % (text, line, position)


def direct_error(client, *command):
    """The error text a direct call of `command` gets."""
    return raw_error(client, *command)


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def raw_error(client, *command):
    """The exact text of the error reply `command` gets on `client`'s server, as `client`'s user
    in `client`'s database. redis-py strips the error codes it knows (`ERR`, `NOPERM`, `OOM`,
    ...) from messages, so errors are read from a plain socket here."""
    kw = client.connection_pool.connection_kwargs
    with socket.create_connection((kw.get("host", "127.0.0.1"), kw["port"])) as s:
        f = s.makefile("rb")
        setup = []
        if kw.get("username"):
            setup.append(("AUTH", kw["username"], kw.get("password") or ""))
        if kw.get("db"):
            setup.append(("SELECT", kw["db"]))
        for c in setup:
            s.sendall(_encode(c))
            f.readline()
        s.sendall(_encode(command))
        line = f.readline()
        if not line.startswith(b"-"):
            raise AssertionError("expected an error from %r, got %r" % (command, line))
        return line[1:].rstrip(b"\r\n").decode("utf-8", "replace")


def raw_reply(client, *command):
    """The reply of `command`, parsed as RESP only (redis-py's per-command parsing of `COMMAND`
    replies does not know module commands)."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_command(*command)
        return connection.read_response()
    finally:
        client.connection_pool.release(connection)


def wait_for(check, timeout=10.0):
    """Polls `check` until it returns something true (returned) or `timeout` seconds pass (then
    its last value)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    return check()


def registrations(client):
    """RG.DUMPREGISTRATIONS."""
    return client.execute_command("RG.DUMPREGISTRATIONS")


def data(registration):
    """A registration's RegistrationData as a dict."""
    fields = registration[7]
    return dict(zip(fields[0::2], fields[1::2]))


# The seed's audit example, and the same in Lua and Rhai.
AUDIT = {
    "python": "GearsBuilder().filter(lambda x: x['key'].startswith('audited-'))"
              ".foreach(lambda x: execute('xadd', 'audit-logs', '*', 'key', x['key'])).register()",
    "lua": "GB():filter(function(x) return x.key:sub(1, 8) == 'audited-' end)"
           ":foreach(function(x) execute('xadd', 'audit-logs', '*', 'key', x.key) end):register()",
    "rhai": 'GB().filter(|x| x.key.starts_with("audited-"))'
            '.foreach(|x| execute("xadd", "audit-logs", "*", "key", x.key)).register()',
}
