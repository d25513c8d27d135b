"""Every condition in the collection's playbooks, roles and molecule scenarios is a string (or a boolean) once YAML
has read it. An unquoted condition with ": " in it (`- x == 'a: b'`) is a mapping to YAML, which ansible-core
refuses only when the task runs ("Conditional expressions must be strings"); this finds it without running."""

import glob
import os

import pytest
import yaml
from harness import paths

CONDITION_KEYS = ("when", "changed_when", "failed_when", "until")
FILES = sorted(
    glob.glob(os.path.join(paths.REPO, "roles", "*", "tasks", "*.yml"))
    + glob.glob(os.path.join(paths.REPO, "roles", "*", "handlers", "*.yml"))
    + glob.glob(os.path.join(paths.REPO, "playbooks", "*.yml"))
    + glob.glob(os.path.join(paths.REPO, "playbooks", "tasks", "*.yml"))
    + glob.glob(os.path.join(paths.REPO, "extensions", "molecule", "*", "*.yml"))
)


def conditions(node, where="") -> list:
    """(place, condition) for every condition below node: the keys above and assert's `that`."""
    found = []
    if isinstance(node, list):
        for index, item in enumerate(node):
            found += conditions(item, "%s[%d]" % (where, index))
    elif isinstance(node, dict):
        for key, value in node.items():
            place = "%s.%s" % (where, key)
            if key in CONDITION_KEYS or (key == "that" and where.endswith("assert")):
                found += [(place, item) for item in (value if isinstance(value, list) else [value])]
            else:
                found += conditions(value, place)
    return found


def test_the_files_are_found():
    names = [os.path.relpath(path, paths.REPO) for path in FILES]
    assert "playbooks/deploy_xdp.yml" in names and "playbooks/tasks/deploy_host.yml" in names and "extensions/molecule/fleet/verify.yml" in names


@pytest.mark.parametrize("path", FILES, ids=lambda path: os.path.relpath(path, paths.REPO))
def test_every_condition_is_a_string_or_a_boolean(path):
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    wrong = [(place, item) for place, item in conditions(data) if not isinstance(item, (str, bool))]
    assert wrong == [], "quote these conditions (YAML read them as %s)" % ", ".join(type(item).__name__ for _place, item in wrong)
