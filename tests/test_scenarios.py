"""The shared scenario table, run for Python, Lua and Rhai against a real redis-server."""
import pytest

from helpers import gears
from scenarios import SCENARIOS

LANGUAGES = ["python", "lua", "rhai"]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[sc["name"] for sc in SCENARIOS])
def test_scenario(r, scenario, language):
    for command in scenario["setup"]:
        r.execute_command(*command)
    reply = gears(r, language, scenario["scripts"][language])
    if scenario["sort"]:
        reply = [sorted(reply[0]), reply[1]]
    assert reply == scenario["expected"]
