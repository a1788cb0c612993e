"""RedisGears' own client tools, unchanged, against Gears: PyPI's gears-cli (run, run with
requirements, install-requirements, export-requirements, import-requirements), installed by the
test into a venv of its own; and RG.PYEXPORTREQ / RG.PYIMPORTREQ directly."""
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest

from conftest import ROOT, RedisServer
from helpers import gears, raw_error

TOOLS = os.path.join(ROOT, ".venv-tools")
CLI = os.path.join(TOOLS, "bin", "gears-cli")


@pytest.fixture(scope="module")
def cli():
    if not os.path.exists(CLI):
        subprocess.run([sys.executable, "-m", "venv", "--clear", TOOLS], check=True, timeout=120)
        subprocess.run([os.path.join(TOOLS, "bin", "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "gears-cli==1.2.0"],
                       check=True, timeout=600)

    def run(*args):
        done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout
    return run


@pytest.fixture
def servers():
    """A server with a package index, and one offline (its wheel directory is empty)."""
    folders = [tempfile.mkdtemp(prefix="gears-tools-") for _ in range(3)]
    online = RedisServer(extra_args=("PythonInstallationDir", folders[0]))
    offline = RedisServer(extra_args=("PythonInstallationDir", folders[1],
                                      "PythonWheelsDir", folders[2]))
    yield online, offline
    online.stop()
    offline.stop()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def names(client):
    return [dict(zip(r[::2], r[1::2]))["Name"] for r in client.execute_command("RG.PYDUMPREQS")]


def test_gears_cli_runs_installs_exports_and_imports_requirements(cli, servers):
    online, offline = servers
    work = tempfile.mkdtemp(prefix="gears-cli-")
    try:
        script = os.path.join(work, "script.py")
        with open(script, "w") as f:
            f.write("GB('ShardsIDReader').map(lambda x: __import__('six').__version__).run()")
        requirements = os.path.join(work, "requirements.txt")
        with open(requirements, "w") as f:
            f.write("six==1.16.0\n")
        port = str(online.port)
        code, out = cli("run", "--port", port, script, "--requirements", requirements)
        assert code == 0 and "1.16.0" in out, out
        code, out = cli("install-requirements", "--port", port, "six==1.17.0")
        assert code == 0 and "Done" in out, out
        assert names(online.new_client()) == ["six==1.16.0", "six==1.17.0"]
        exported = os.path.join(work, "exported")
        os.mkdir(exported)
        code, out = cli("export-requirements", "--port", port, "--all", "--save-directory", exported)
        assert code == 0, out
        files = sorted(os.listdir(exported))
        assert files == ["redisgears-requirement-v2-six==1.16.0-linux-x86_64.zip",
                         "redisgears-requirement-v2-six==1.17.0-linux-x86_64.zip"]
        with zipfile.ZipFile(os.path.join(exported, files[0])) as z:
            assert sorted(z.namelist()) == ["Data.bin", "MetaData.json"]
        # The offline server can not install from an index, but imports the exported wheels.
        c = offline.new_client()
        code, out = cli("run", "--port", str(offline.port), script, "--requirements", requirements)
        assert code != 0
        code, out = cli("import-requirements", "--port", str(offline.port),
                        "--requirements-path", exported, *files)
        assert code == 0 and out.count("imported successfully") == 2, out
        assert names(c) == ["six==1.16.0", "six==1.17.0"]
        code, out = cli("run", "--port", str(offline.port), script, "--requirements", requirements)
        assert code == 0 and "1.16.0" in out, out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_export_and_import_requirement_replies(servers):
    online, offline = servers
    c = online.new_client()
    assert gears(c, "python", "GB().run()", "REQUIREMENTS", "six==1.16.0") == [[], []]
    assert raw_error(c, "RG.PYEXPORTREQ", "six") == "requirement does not exists"
    meta, chunks = redis_bytes(online).execute_command("RG.PYEXPORTREQ", "six==1.16.0")
    assert meta == redis_bytes(online).execute_command("RG.PYDUMPREQS")[0]
    assert len(chunks) == 1
    blob = b"".join(chunks)
    # RedisGears 1.2's layout: version 2, then the name as a NUL-terminated string.
    assert blob[:8] == (2).to_bytes(8, sys.byteorder)
    assert blob[8:16] == (len("six==1.16.0") + 1).to_bytes(8, sys.byteorder)
    assert blob[16:28] == b"six==1.16.0\x00"
    o = offline.new_client()
    assert raw_error(o, "RG.PYIMPORTREQ", blob[:20]) == \
        "Bad serialization format on reading requirement name"
    assert raw_error(o, "RG.PYIMPORTREQ", b"\x07" + blob[1:]) == \
        "Bad serialization format on reading requirement version"
    # Wheels only: a source archive would be built by pip, running its code.
    sdist = blob.replace(b"six-1.16.0-py2.py3-none-any.whl", b"six-1.16.0-py2.py3-none-any.tgz")
    assert raw_error(o, "RG.PYIMPORTREQ", sdist) == \
        "Bad serialization format on reading requirement wheel file name"
    assert redis_bytes(offline).execute_command("RG.PYIMPORTREQ", blob[:1000], blob[1000:]) == b"OK"
    assert names(o) == ["six==1.16.0"]
    assert gears(o, "python", "GB('ShardsIDReader').map(lambda x: __import__('six').__version__).run()",
                 "REQUIREMENTS", "six==1.16.0") == [["1.16.0"], []]


def redis_bytes(server):
    import redis
    return redis.Redis(host="127.0.0.1", port=server.port, decode_responses=False)


GEARSCLIENT = os.path.join(ROOT, ".venv-gearsclient")


@pytest.fixture(scope="module")
def gearsclient_python():
    """A venv with PyPI's gearsclient 1.0.2. Its pin (cloudpickle < 2) can not pickle on Python
    3.11 and later, so cloudpickle is upgraded there: the tool's code is unchanged."""
    python = os.path.join(GEARSCLIENT, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", "--clear", GEARSCLIENT], check=True, timeout=120)
        for packages in (["gearsclient==1.0.2"], ["cloudpickle>=3"]):
            subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            *packages], check=True, timeout=600)
    return python


def test_gearsclient_remote_builder_runs_with_requirements(gearsclient_python, servers):
    online, _ = servers
    c = online.new_client()
    for i in range(10):
        c.hset("user:%d" % i, mapping={"age": str(20 + i)})
    # The server gets gearsclient (its pickled pipeline refers to it) and a cloudpickle that
    # works on its Python as requirements, from the package index.
    code = (
        "import redis\n"
        "from gearsclient import GearsRemoteBuilder as GRB\n"
        "r = redis.Redis(host='127.0.0.1', port=%d)\n"
        "reqs = ['gearsclient==1.0.2', 'cloudpickle>=3']\n"
        "def b():\n"
        "    return GRB(r=r, requirements=list(reqs), addClientToRequirements=False)\n"
        "print(b().count().run('user:*'))\n"
        "print(sorted(b().countby(lambda x: int(x['value']['age']) %% 2).run('user:*')[0],"
        " key=lambda x: x['key']))\n"
        "print(b().map(lambda x: float(x['value']['age'])).avg().run('user:*'))\n" % online.port)
    done = subprocess.run([gearsclient_python, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "([10], [])",
        "[{'key': '0', 'value': 5}, {'key': '1', 'value': 5}]",
        "([24.5], [])",
    ]
