"""Runs every recipe of docs/cookbook.md, in every language, against a real redis-server."""
import json
import os
import re
import shlex

import pytest

from helpers import gears

COOKBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "cookbook.md")
BLOCK = re.compile(r"```(\w+)( sorted)?\n(.*?)```", re.S)


def recipes():
    with open(COOKBOOK) as f:
        text = f.read()
    found = []
    for section in text.split("\n## ")[1:]:
        title = section.split("\n", 1)[0]
        blocks = {}
        sort = False
        for kind, sorted_flag, body in BLOCK.findall(section):
            blocks[kind] = body
            if kind == "reply":
                sort = bool(sorted_flag)
        found.append((title, blocks, sort))
    return found


RECIPES = recipes()


def test_the_cookbook_has_recipes():
    assert [title for title, _, _ in RECIPES] == [
        "Word count", "Average", "Delete by prefix", "Maximum by group", "Count people per family"]


@pytest.mark.parametrize("language", ["python", "lua", "rhai"])
@pytest.mark.parametrize("recipe", RECIPES, ids=[title for title, _, _ in RECIPES])
def test_recipe(r, recipe, language):
    _, blocks, sort = recipe
    for line in blocks["redis"].strip().splitlines():
        r.execute_command(*shlex.split(line))
    reply = gears(r, language, blocks[language])
    if sort:
        reply = [sorted(reply[0]), reply[1]]
    assert reply == json.loads(blocks["reply"])
