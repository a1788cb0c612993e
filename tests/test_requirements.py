"""Python requirements: `RG.PYEXECUTE ... REQUIREMENTS r1 r2 ...` installs pip requirements
(from the package index, or offline from a wheel directory) off Redis's main thread, shares them
between sessions, reinstalls them on FORCE_REINSTALL_REQUIREMENTS, lists them in RG.PYDUMPREQS,
and keeps them with their sessions across a restart and on a replica. These tests reach PyPI
(small pure-Python packages: six)."""
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile

import pytest

from conftest import RedisServer
from helpers import gears, gears_error, wait_for

NOT_SATISFIED = "Could not satisfy requirements, look at the log file for more information."
VERSION = "GB('ShardsIDReader').map(lambda x: __import__('six').__version__).run()"


@pytest.fixture
def installs():
    """A fresh installation directory per test (and removed after it)."""
    folder = tempfile.mkdtemp(prefix="gears-reqs-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def server(installs, *extra):
    return RedisServer(extra_args=("PythonInstallationDir", installs, *extra))


def metadata(requirement):
    return dict(zip(requirement[::2], requirement[1::2]))


def test_a_requirement_from_the_index_is_installed_and_importable(installs):
    s = server(installs)
    try:
        c = s.new_client()
        assert gears(c, "python", VERSION, "REQUIREMENTS", "six==1.16.0") == [["1.16.0"], []]
        [req] = c.execute_command("RG.PYDUMPREQS")
        fields = metadata(req)
        assert req[::2] == ["GearReqVersion", "Name", "IsDownloaded", "IsInstalled", "CompiledOs",
                            "Wheels", "Path", "RefCount", "IsInReqDictionary"]
        assert (fields["GearReqVersion"], fields["Name"], fields["IsDownloaded"],
                fields["IsInstalled"], fields["Wheels"], fields["RefCount"],
                fields["IsInReqDictionary"]) == (
            2, "six==1.16.0", "yes", "yes", ["six-1.16.0-py2.py3-none-any.whl"], 1, "yes")
        assert re.fullmatch(re.escape(installs) + r"/six__1\.16\.0_[0-9a-f]{10}", fields["Path"])
        assert os.path.isfile(os.path.join(fields["Path"], "wheels", "six-1.16.0-py2.py3-none-any.whl"))
        # pip's output is in the Redis log.
        assert "pip wheel 'six==1.16.0': " in s.read_log()
        assert "Successfully installed six-1.16.0" in s.read_log()
    finally:
        s.stop()


def test_requirements_are_shared_kept_with_their_session_and_reinstalled_on_force(installs):
    s = server(installs)
    try:
        c = s.new_client()
        assert gears(c, "python", "import six\nGB('CommandReader').map(lambda x: six.__version__)"
                     ".register(trigger='six')", "ID", "s1", "REQUIREMENTS", "six==1.16.0") == "OK"
        path = metadata(c.execute_command("RG.PYDUMPREQS")[0])["Path"]
        assert c.execute_command("RG.TRIGGER", "six") == ["1.16.0"]
        # Another script naming it uses the same installation (pip does not run again).
        log_before = s.read_log().count("pip wheel 'six==1.16.0'")
        assert gears(c, "python", VERSION, "REQUIREMENTS", "six==1.16.0") == [["1.16.0"], []]
        assert s.read_log().count("pip wheel 'six==1.16.0'") == log_before
        [req] = c.execute_command("RG.PYDUMPREQS")
        assert (metadata(req)["Path"], metadata(req)["RefCount"]) == (path, 2)
        [session] = c.execute_command("RG.PYDUMPSESSIONS")
        assert session[10:14] == ["requirementInstallationNeeded", 1, "requirements", ["six==1.16.0"]]
        [verbose] = c.execute_command("RG.PYDUMPSESSIONS", "VERBOSE")
        assert metadata(verbose[13][0])["Name"] == "six==1.16.0"
        # FORCE_REINSTALL_REQUIREMENTS: a new installation, used from then on.
        assert gears(c, "python", "import six\nGB('CommandReader').map(lambda x: six.__version__)"
                     ".register(trigger='six')", "ID", "s1", "UPGRADE",
                     "FORCE_REINSTALL_REQUIREMENTS", "REQUIREMENTS", "six==1.16.0") == "OK"
        [req] = c.execute_command("RG.PYDUMPREQS")
        assert metadata(req)["Path"] != path and metadata(req)["Name"] == "six==1.16.0"
        # An upgrade to another version of the package: the new one is imported.
        assert gears(c, "python", "import six\nGB('CommandReader').map(lambda x: six.__version__)"
                     ".register(trigger='six')", "ID", "s1", "UPGRADE",
                     "REQUIREMENTS", "six==1.17.0") == "OK"
        assert c.execute_command("RG.TRIGGER", "six") == ["1.17.0"]
        assert [metadata(r)["Name"] for r in c.execute_command("RG.PYDUMPREQS")] == \
            ["six==1.16.0", "six==1.17.0"]
        # A restart: the session is made again from the RDB with the installed requirement, no
        # pip (it never runs on the main thread).
        c.execute_command("SAVE")
        pip_runs = s.read_log().count("GEARS: pip ")
        s.stop(keep_dir=True)
        s = RedisServer(extra_args=("PythonInstallationDir", installs), dir=s.dir)
        c = s.new_client()
        assert c.execute_command("RG.TRIGGER", "six") == ["1.17.0"]
        assert s.read_log().count("GEARS: pip ") == pip_runs
        assert [metadata(r)["Name"] for r in c.execute_command("RG.PYDUMPREQS")] == ["six==1.17.0"]
    finally:
        s.stop()


def test_a_requirement_that_can_not_be_installed(installs):
    s = server(installs)
    try:
        c = s.new_client()
        assert gears_error(c, "python", "GB().run()", "REQUIREMENTS",
                           "gears-no-such-package-3f9a1c") == NOT_SATISFIED
        assert "No matching distribution found for gears-no-such-package-3f9a1c" in s.read_log()
        assert c.execute_command("RG.PYDUMPREQS") == []
        # Nothing half-installed is left behind.
        assert os.listdir(installs) == []
        # A registration with it is not made.
        assert gears_error(c, "python", "GB().register()", "REQUIREMENTS",
                           "gears-no-such-package-3f9a1c") == NOT_SATISFIED
        assert c.execute_command("RG.DUMPREGISTRATIONS") == []
    finally:
        s.stop()


def test_a_silent_pip_is_stopped_after_python_install_req_max_idle_time(installs):
    s = server(installs, "PythonInstallReqMaxIdleTime", "30")
    try:
        c = s.new_client()
        assert gears_error(c, "python", "GB().run()", "REQUIREMENTS", "six==1.16.0") == NOT_SATISFIED
        assert "printed nothing for 30 ms (PythonInstallReqMaxIdleTime): stopped" in s.read_log()
        assert os.listdir(installs) == []
    finally:
        s.stop()


def test_installing_does_not_block_other_clients(installs):
    s = server(installs)
    try:
        c = s.new_client()
        done = []
        t = threading.Thread(target=lambda: done.append(
            gears(s.new_client(), "python", VERSION, "REQUIREMENTS", "six==1.17.0")))
        t.start()
        slowest = 0
        while t.is_alive():
            started = time.time()
            assert c.ping()
            slowest = max(slowest, time.time() - started)
            time.sleep(0.01)
        t.join()
        assert done == [[["1.17.0"], []]]
        assert slowest < 0.1, slowest
    finally:
        s.stop()


def fake_wheel(folder, name, version, value):
    """A minimal pure-Python wheel, made here: the offline test needs no index."""
    path = os.path.join(folder, "%s-%s-py3-none-any.whl" % (name, version))
    info = "%s-%s.dist-info" % (name, version)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("%s/__init__.py" % name, "VALUE = %r\n" % value)
        wheel.writestr(info + "/METADATA",
                       "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version))
        wheel.writestr(info + "/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: gears-tests\nRoot-Is-Purelib: true\n"
                       "Tag: py3-none-any\n")
        wheel.writestr(info + "/RECORD", "%s/__init__.py,,\n%s/METADATA,,\n%s/WHEEL,,\n%s/RECORD,,\n"
                       % (name, info, info, info))
    return path


def test_an_offline_install_from_a_wheel_directory(installs):
    wheels = tempfile.mkdtemp(prefix="gears-wheels-")
    fake_wheel(wheels, "gears_offline_pkg", "1.0", "from the wheel dir")
    s = server(installs, "PythonWheelsDir", wheels)
    try:
        c = s.new_client()
        assert gears(c, "python",
                     "GB('ShardsIDReader').map(lambda x: __import__('gears_offline_pkg').VALUE).run()",
                     "REQUIREMENTS", "gears_offline_pkg==1.0") == [["from the wheel dir"], []]
        assert metadata(c.execute_command("RG.PYDUMPREQS")[0])["Wheels"] == \
            ["gears_offline_pkg-1.0-py3-none-any.whl"]
        # Offline means the index is not asked: a package only the index has is not found.
        assert gears_error(c, "python", "GB().run()", "REQUIREMENTS", "six==1.16.0") == NOT_SATISFIED
    finally:
        s.stop()
        shutil.rmtree(wheels, ignore_errors=True)


def test_a_replica_makes_the_session_with_the_installed_requirement(installs):
    master = RedisServer(extra_args=("PythonInstallationDir", installs),
                         server_args=("--repl-diskless-sync-delay", "0"))
    replica = None
    replica_dir = tempfile.mkdtemp(prefix="gears-reqs-")
    offline = tempfile.mkdtemp(prefix="gears-wheels-")
    try:
        m = master.new_client()
        assert gears(m, "python", "import six\nGB('CommandReader').map(lambda x: six.__version__)"
                     ".register(trigger='six')", "ID", "r1", "REQUIREMENTS", "six==1.16.0") == "OK"
        # The replica has its own installation directory and no package index: the wheels come
        # with the full sync (RDB), then with the replication stream.
        replica = RedisServer(extra_args=("PythonInstallationDir", replica_dir,
                                          "PythonWheelsDir", offline),
                              server_args=("--replicaof", "127.0.0.1", str(master.port)))
        r = replica.new_client()
        assert wait_for(lambda: len(r.execute_command("RG.DUMPREGISTRATIONS")) == 1)
        assert [metadata(x)["Name"] for x in r.execute_command("RG.PYDUMPREQS")] == ["six==1.16.0"]
        assert gears(m, "python", "import six\nGB('CommandReader').map(lambda x: six.__version__)"
                     ".register(trigger='six2')", "ID", "r2", "REQUIREMENTS", "six==1.17.0") == "OK"
        assert wait_for(lambda: len(r.execute_command("RG.DUMPREGISTRATIONS")) == 2)
        assert all(metadata(x)["Path"].startswith(replica_dir)
                   for x in r.execute_command("RG.PYDUMPREQS"))
        r.execute_command("REPLICAOF", "NO", "ONE")
        assert r.execute_command("RG.TRIGGER", "six2") == ["1.17.0"]
    finally:
        if replica:
            replica.stop()
        master.stop()
        shutil.rmtree(replica_dir, ignore_errors=True)
        shutil.rmtree(offline, ignore_errors=True)


def test_requirements_options(installs):
    s = server(installs)
    try:
        c = s.new_client()
        # REQUIREMENTS must be last: what follows it are requirements; none is allowed.
        assert gears(c, "python", "GB('ShardsIDReader').count().run()", "REQUIREMENTS") == [["1"], []]
        assert gears_error(c, "python", "GB().run()", "REQUIREMENTS", "gears-no-such-package-3f9a1c",
                           "UPGRADE") == NOT_SATISFIED
        # Python only.
        assert gears_error(c, "lua", "GB():run()", "REQUIREMENTS", "six") == \
            "Unknown arguments were given: REQUIREMENTS"
        assert gears_error(c, "rhai", "GB().run()", "FORCE_REINSTALL_REQUIREMENTS") == \
            "Unknown arguments were given: FORCE_REINSTALL_REQUIREMENTS"
        assert c.execute_command("RG.PYDUMPREQS") == []
    finally:
        s.stop()


def test_a_restart_on_another_machine_gets_the_requirements_from_the_rdb(installs):
    # The RDB carries the sessions' requirements with their wheels: a server started from it
    # with an empty installation directory and no package index makes the sessions.
    s = server(installs)
    other = tempfile.mkdtemp(prefix="gears-reqs-")
    offline = tempfile.mkdtemp(prefix="gears-wheels-")
    try:
        c = s.new_client()
        assert gears(c, "python", "import six\nGB('CommandReader').map(lambda x: six.__version__)"
                     ".register(trigger='six')", "ID", "needs", "REQUIREMENTS", "six==1.16.0") == "OK"
        c.execute_command("SAVE")
        s.stop(keep_dir=True)
        s = RedisServer(extra_args=("PythonInstallationDir", other, "PythonWheelsDir", offline),
                        dir=s.dir)
        c = s.new_client()
        assert c.execute_command("RG.TRIGGER", "six") == ["1.16.0"]
        [req] = c.execute_command("RG.PYDUMPREQS")
        assert metadata(req)["Name"] == "six==1.16.0"
        assert metadata(req)["Path"].startswith(other + "/six__1.16.0_")
        assert "GEARS: pip " not in s.read_log().split("Ready to accept connections")[-1]
    finally:
        s.stop()
        shutil.rmtree(other, ignore_errors=True)
        shutil.rmtree(offline, ignore_errors=True)


def test_a_session_whose_requirement_is_not_there_is_dead(installs):
    s = server(installs)
    other = tempfile.mkdtemp(prefix="gears-reqs-")
    try:
        c = s.new_client()
        assert gears(c, "python", "import six\nGB().register('k:*')", "ID", "needs",
                     "REQUIREMENTS", "six==1.16.0") == "OK"
        # Its folder deleted before the save: the RDB has no wheels for it.
        for folder in os.listdir(installs):
            shutil.rmtree(os.path.join(installs, folder))
        c.execute_command("SAVE")
        s.stop(keep_dir=True)
        s = RedisServer(extra_args=("PythonInstallationDir", other), dir=s.dir)
        c = s.new_client()
        assert c.execute_command("RG.DUMPREGISTRATIONS") == []
        [dead] = c.execute_command("RG.PYDUMPSESSIONS", "DEAD")
        assert dead[:2] == ["ID", "needs"] and dead[8:10] == ["dead", "true"]
        assert "session missing requirement (six==1.16.0)" in s.read_log()
    finally:
        s.stop()
        shutil.rmtree(other, ignore_errors=True)


def test_requirements_reach_every_shard_of_a_cluster_with_their_wheels():
    # Each shard has its own installation directory; only the initiator may reach the package
    # index. The others get the wheels with the run and with the registration.
    from cluster import Cluster
    folders = [tempfile.mkdtemp(prefix="gears-reqs-") for _ in range(4)]
    offline = folders[3]
    c = Cluster(masters=3, module_args=("ExecutionMaxIdleTime", "20000"),
                node_args=lambda i: ("PythonInstallationDir", folders[i]) +
                (("PythonWheelsDir", offline) if i else ()))
    try:
        client = c.client()
        for i in range(30):
            client.set("rq:%d" % i, i)
        first = c.nodes[0]
        assert all(n.client.dbsize() > 0 for n in c.masters)
        assert gears(first.new_client(), "python",
                     "GB().map(lambda x: __import__('six').__version__).run('rq:*')",
                     "REQUIREMENTS", "six==1.16.0") == [["1.16.0"] * 30, []]
        assert gears(first.new_client(), "python",
                     "import six\nGB('CommandReader').map(lambda x: six.__version__)"
                     ".register(trigger='six')", "REQUIREMENTS", "six==1.17.0") == "OK"
        for node in c.masters:
            assert node.client.execute_command("RG.TRIGGER", "six") == ["1.17.0"]
            paths = [metadata(r)["Path"] for r in node.client.execute_command("RG.PYDUMPREQS")]
            assert len(paths) == 2 and all(p.startswith(folders[c.nodes.index(node)]) for p in paths)
    finally:
        c.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
