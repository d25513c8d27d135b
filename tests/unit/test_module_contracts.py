"""What every module of the collection promises Ansible: no result key Ansible reserves, and the options shared by
the action group (module_defaults for group/ebpf.fleet.ebpf) accepted by every module of the group."""

import importlib
import inspect
import os
import re

import pytest
import yaml
from ansible import constants as C
from ansible.plugins.action import ActionBase
from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils import shared_options

with open(os.path.join(paths.REPO, "meta", "runtime.yml"), encoding="utf-8") as handle:
    GROUP = yaml.safe_load(handle)["action_groups"]["ebpf"]
MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(paths.REPO, "plugins", "modules")) if name.endswith(".py") and not name.startswith("_"))


def reserved_result_keys() -> set:
    """The keys the installed ansible-core renames or removes from a module's result (with a warning)."""
    source = inspect.getsource(ActionBase._execute_module)
    renamed = set(re.findall(r"data\['ansible_module_\w+'\] = data\['(\w+)'\]", source))
    assert renamed, "ansible-core no longer renames a result key this way: update this test"
    return renamed | set(C.INTERNAL_RESULT_KEYS) | set(C.RESTRICTED_RESULT_KEYS)


def module(name):
    return importlib.import_module("ansible_collections.ebpf.fleet.plugins.modules.%s" % name)


def test_reserved_keys_come_from_ansible_core():
    assert "results" in reserved_result_keys()


@pytest.mark.parametrize("name", MODULES)
def test_module_returns_no_key_ansible_reserves(name):
    keys = set(yaml.safe_load(module(name).RETURN) or {})
    bad = {key for key in keys if key in reserved_result_keys() or key.startswith("_ansible_")}
    assert not bad, "%s documents result keys Ansible reserves: %s" % (name, sorted(bad))


def test_every_module_is_in_the_action_group():
    assert sorted(GROUP) == MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_accepts_and_documents_the_groups_shared_options(name):
    mod = module(name)
    spec = mod.argument_spec()
    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert "ebpf.fleet.paths" in doc.get("extends_documentation_fragment", [])
    for option, want in shared_options.argument_spec().items():
        assert spec.get(option) == want, "%s: %s is %r, the group's is %r" % (name, option, spec.get(option), want)
        assert option not in doc.get("options", {}), "%s documents %s itself; the fragment does" % (name, option)


def test_the_fragment_documents_the_shared_options_as_the_spec_defines_them():
    from ansible_collections.ebpf.fleet.plugins.doc_fragments import paths as fragment

    documented = yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)["options"]
    spec = shared_options.argument_spec()
    assert set(documented) == set(spec)
    for option, doc in documented.items():
        assert (doc["type"], doc["default"]) == (spec[option]["type"], spec[option]["default"])
