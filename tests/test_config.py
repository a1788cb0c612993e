"""RG.CONFIGGET / RG.CONFIGSET with RedisGears 1.2's replies: one element per name, errors as
elements, its name matching rules and texts."""
import pytest

from conftest import RedisServer
from helpers import gears, raw_reply


@pytest.fixture(scope="module")
def server():
    s = RedisServer(extra_args=("MyExtra", "hello", "MaxExecutions", "500"))
    yield s
    alive = s.alive()
    log = s.read_log()
    s.stop()
    assert alive, "redis-server died during the tests:\n" + log


def replies(client, *command):
    """Each element of the reply, errors as ('error', text)."""
    out = []
    for item in raw_reply(client, *command):
        out.append(("error", str(item)) if isinstance(item, Exception) else item)
    return out


def test_config_get_replies_per_name(r):
    assert replies(r, "RG.CONFIGGET", "MaxExecutions", "ExecutionThreads", "MyExtra", "Nope",
                   "maxexecutions", "PythonAttemptTraceback", "Plugin", "AtomicBlockMaxTime") == [
        500, 3, "hello", ("error", "(error) Unsupported config parameter: Nope"),
        ("error", "(error) Unsupported config parameter: maxexecutions"), 1, [], 5000]
    assert replies(r, "RG.CONFIGGET") == []


def test_config_set_replies_per_pair(r):
    assert replies(r, "RG.CONFIGSET", "maxexecutions", "20", "ExecutionThreads", "5",
                   "MaxExecutions", "abc", "NewOne", "v", "CreateVenv", "1",
                   "PythonInstallReqMaxIdleTime", "x", "PythonInstallReqMaxIdleTime", "1000",
                   "Dangling") == [
        "OK",
        ("error", "(error) Config value ExecutionThreads not modifiable at runtime"),
        ("error", "(error) Failed setting config value MaxExecutions"),
        "OK - value was saved in extra config dictionary",
        ("error", "(error) CreateVenv is not configurable at runtime"),
        ("error", "Failed setting config value for key 'PythonInstallReqMaxIdleTime' with value 'x'"),
        "OK - value was saved in extra config dictionary",
        ("error", "(error) Value was not given to Dangling"),
    ]
    assert replies(r, "RG.CONFIGGET", "MaxExecutions", "NewOne", "PythonInstallReqMaxIdleTime",
                   "ExecutionThreads") == [20, "v", 1000, 3]
    r.execute_command("RG.CONFIGSET", "MaxExecutions", "500")


def test_scripts_read_settings_with_config_get(r):
    r.execute_command("RG.CONFIGSET", "PythonAttemptTraceback", "0")
    try:
        assert gears(r, "python", "GB('ShardsIDReader').map(lambda x: [configGet('MaxExecutions'), "
                                  "configGet('MyExtra'), configGet('PythonAttemptTraceback')]).run()") == \
            [["[500, 'hello', 0]"], []]
        # PythonAttemptTraceback 0 takes effect at once.
        assert gears(r, "python", "GB('ShardsIDReader').map(lambda x: 1 / 0).run()") == \
            [[], ["Error type: <class 'ZeroDivisionError'>, Value: division by zero"]]
    finally:
        r.execute_command("RG.CONFIGSET", "PythonAttemptTraceback", "1")


@pytest.mark.parametrize("args, error", [
    (("ExecutionThreads", "0"), "(error) Failed setting config value ExecutionThreads"),
    (("MemoryLimit", "lots"), "(error) Failed setting config value MemoryLimit"),
    (("PythonAttemptTraceback", "x"),
     "Failed setting config value for key 'PythonAttemptTraceback' with value 'x'"),
    (("odd",), "(error) Value was not given to odd"),
])
def test_bad_module_arguments_refuse_the_load(args, error):
    with pytest.raises(RuntimeError) as e:
        RedisServer(extra_args=args)
    assert "Gears: " + error in str(e.value)
