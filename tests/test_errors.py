"""Bad input gets a clear error (reply or errors-list entry) and the server keeps answering.

The `r` fixture checks after every test that the server still answers PING.
"""
import pytest
import redis

from helpers import gears, gears_error, py_error


py_traceback = py_error


SYNTAX_ERRORS = {
    "python": ("x = 1\ny = 2\nz = (", "Error type: <class 'SyntaxError'>, Value: '(' was never closed (<string>, line 3)"),
    "lua": ("local x = 1\nlocal y = 2\nGB():map(function(x)", "script:3: 'end' expected near <eof>"),
    "rhai": ("let x = 1;\nlet y = 2;\nGB().map(|x| ", "Syntax error: Expecting ')' to close the arguments list of this function call 'map' (line 3, position 14)"),
}


TOP_LEVEL_ERRORS = {
    "python": ("foo", py_traceback("<module>", "NameError: name 'foo' is not defined")),
    "lua": ("local a = 1\nerror('bad script')", "script:2: bad script"),
    "rhai": ('let a = 1;\nthrow "bad script";', "bad script (line 2, position 1)"),
}


RAISES_ON_ONE_RECORD = {
    "python": ("GB().map(lambda x: 1 / 0 if x['key'] == 'k:2' else x['key']).run('k:*')",
               py_traceback("<lambda>", "ZeroDivisionError: division by zero")),
    "lua": ("GB():map(function(x) if x.key == 'k:2' then error('boom') end return x.key end):run('k:*')",
            "script:1: boom"),
    "rhai": ('GB().map(|x| if x.key == "k:2" { throw "boom" } else { x.key }).run("k:*")',
             "boom (line 1, position 34)"),
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_a_failing_record_does_not_stop_the_others(r, language):
    for i in range(1, 5):
        r.set("k:%d" % i, "v")
    script, error = RAISES_ON_ONE_RECORD[language]
    results, errors = gears(r, language, script)
    assert sorted(results) == ["k:1", "k:3", "k:4"]
    assert errors == [error]


UNKNOWN_COMMAND = {
    "python": ("GB('ShardsIDReader').map(lambda x: execute('nosuchcommand', 'a')).run()",
               py_traceback("<lambda>", "gears.error: ERR unknown command 'nosuchcommand', with args beginning with: 'a' ")),
    "lua": ("GB('ShardsIDReader'):map(function(x) return execute('nosuchcommand', 'a') end):run()",
            "script:1: ERR unknown command 'nosuchcommand', with args beginning with: 'a' "),
    "rhai": ('GB("ShardsIDReader").map(|x| execute("nosuchcommand", "a")).run()',
             "ERR unknown command 'nosuchcommand', with args beginning with: 'a'  (line 1, position 30)"),
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_unknown_command_in_execute(r, language):
    script, error = UNKNOWN_COMMAND[language]
    assert gears(r, language, script) == [[], [error]]


def test_redis_error_replies_raise_in_python_and_can_be_caught(r):
    r.set("s", "text")
    script = ("def f(x):\n"
              "    try:\n"
              "        execute('INCR', 's')\n"
              "    except GearsError as e:\n"
              "        return 'caught: %s' % e\n"
              "GB('ShardsIDReader').map(f).run()")
    assert gears(r, "python", script) == [["caught: ERR value is not an integer or out of range"], []]


MISSING_ARGUMENT = {
    "python": ("GB().map()", py_traceback("<module>", "gears.error: wrong number of args to map function")),
    "lua": ("GB():map()", "script:1: wrong number of args to map function"),
    "rhai": ("GB().map()", "wrong number of args to map function (line 1, position 6)"),
}


NOT_A_FUNCTION = {
    "python": ("GB().filter(1)", py_traceback("<module>", "gears.error: filter argument must be a function")),
    "lua": ("GB():filter(1)", "script:1: filter argument must be a function"),
    "rhai": ("GB().filter(1)", "filter argument must be a function (line 1, position 6)"),
}


LIMIT_NOT_A_NUMBER = {
    "python": ("GB().limit('a')", py_traceback("<module>", "gears.error: limit argument must be a number")),
    "lua": ("GB():limit('a')", "script:1: limit argument must be a number"),
    "rhai": ('GB().limit("a")', "limit argument must be a number (line 1, position 6)"),
}


TWO_RUNS = {
    "python": ("GB().run()\nGB().run()", str(["Traceback (most recent call last):\n",
                                              '  File "<string>", line 2, in <module>\n',
                                              "gears.error: Can not run more then 1 executions in a single script\n"])),
    "lua": ("GB():run()\nGB():run()", "script:2: Can not run more then 1 executions in a single script"),
    "rhai": ("GB().run();\nGB().run();", "Can not run more then 1 executions in a single script (line 2, position 6)"),
}


COMMAND_READER = {
    "python": ("GB('CommandReader').run()",
               py_traceback("<module>", "gears.error: Given reader do not support run or not exists")),
    "lua": ("GB('CommandReader'):run()", "script:1: Given reader do not support run or not exists"),
    "rhai": ('GB("CommandReader").run()', "Given reader do not support run or not exists (line 1, position 21)"),
}


# Scripts that fail the command itself: one table per case, one script per language.
ERROR_REPLIES = {
    "syntax error names the line": SYNTAX_ERRORS,
    "top-level error": TOP_LEVEL_ERRORS,
    "missing argument": MISSING_ARGUMENT,
    "argument must be a function": NOT_A_FUNCTION,
    "limit argument must be a number": LIMIT_NOT_A_NUMBER,
    "only one run per script": TWO_RUNS,
    "CommandReader can not run": COMMAND_READER,
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
@pytest.mark.parametrize("case", list(ERROR_REPLIES))
def test_error_reply(r, case, language):
    script, expected = ERROR_REPLIES[case][language]
    assert gears_error(r, language, script) == expected


def test_script_without_run_replies_ok(r):
    assert gears(r, "python", "x = 1") == "OK"
    assert gears(r, "lua", "local x = 1") == "OK"
    assert gears(r, "rhai", "let x = 1;") == "OK"


@pytest.mark.parametrize("command", ["RG.PYEXECUTE", "RG.LUAEXECUTE", "RG.RHAIEXECUTE"])
def test_missing_script_is_a_wrong_arity_error(r, command):
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command(command)
    assert str(e.value) == "wrong number of arguments for '%s' command" % command


def test_unknown_and_unsupported_options(r):
    assert gears_error(r, "python", "x = 1", "FOO") == "Unknown arguments were given: FOO"
    assert gears_error(r, "python", "x = 1", "ID") == "ID is missing"
    assert gears_error(r, "python", "x = 1", "ID", "a b") == \
        "ID must be compose of: ['A'-'Z' | 'a'-'z' | '0' - '9' | '-' | '_']"
    assert gears_error(r, "lua", "local x = 1", "REQUIREMENTS", "numpy") == \
        "Unknown arguments were given: REQUIREMENTS"


def test_refused_inside_multi_and_lua(r):
    pipe = r.pipeline(transaction=True)
    pipe.execute_command("RG.PYEXECUTE", "x = 1")
    with pytest.raises(redis.ResponseError) as e:
        pipe.execute()
    assert "Can not run gears inside a multi exec, lua, or when blocking is not allowed" in str(e.value)
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return redis.call('RG.PYEXECUTE', 'x = 1')", 0)
    assert "Can not run gears inside a multi exec, lua, or when blocking is not allowed" in str(e.value)


def test_lua_is_sandboxed(r):
    script = ("GB('ShardsIDReader'):map(function(x) return tostring(io) .. ' ' .. tostring(os) .. ' ' "
              ".. tostring(require) .. ' ' .. tostring(dofile) .. ' ' .. tostring(debug) end):run()")
    assert gears(r, "lua", script) == [["nil nil nil nil nil"], []]


def test_rhai_can_not_import_modules(r):
    error = gears_error(r, "rhai", 'import "std" as s;')
    assert error.startswith("Module not found: std")


EXPLAIN_SCRIPTS = {
    "python": "GB().map(lambda x: x['key']).count().run('user:*')",
    "lua": "GB():map(function(x) return x.key end):count():run('user:*')",
    "rhai": 'GB().map(|x| x.key).count().run("user:*")',
}


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
def test_explain(r, language):
    reply = r.execute_command("RG.EXPLAIN", language, EXPLAIN_SCRIPTS[language])
    assert reply == [
        'reader: KeysReader pattern="user:*" noScan=false readValue=true',
        "1: map [runs in %s] [local]" % language,
        "2: count (partial) [runs in rust] [local]",
        "3: collect [runs in rust] [moves records: collect to initiator]",
        "4: count (final) [runs in rust] [local]",
        "5: to string [runs in rust] [local]",
        "6: collect [runs in rust] [moves records: collect to initiator]",
    ]
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("RG.EXPLAIN", "cobol", "x")
    assert str(e.value) == "unknown language 'cobol', expected python, lua or rhai"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("RG.EXPLAIN", "python", "x = 1")
    assert str(e.value) == "the script does not call run()"


def test_module_refuses_to_unload(r):
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("MODULE", "UNLOAD", "rg")
    assert "unload" in str(e.value).lower()
    assert gears(r, "python", "GB('ShardsIDReader').run()") == [["1"], []]


def test_lua_pcall_gets_the_error_text(r):
    script = ("GB('ShardsIDReader'):map(function(x) local ok, e = pcall(execute, 'nosuch') "
              "local ok2, e2 = pcall(function() return execute('nosuch') end) "
              "local ok3, e3 = pcall(error, {code = 7}) "
              "return {tostring(ok), e, e2, e3.code} end):run()")
    # The error of a Gears function is its text at the calling line, with no stack traceback;
    # other error values (a table) pass unchanged.
    assert gears(r, "lua", script) == [[str([
        "false",
        "script:1: ERR unknown command 'nosuch', with args beginning with: ",
        "script:1: ERR unknown command 'nosuch', with args beginning with: ",
        7])], []]
