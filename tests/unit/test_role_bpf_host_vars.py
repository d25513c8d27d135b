"""Role ebpf.fleet.bpf_host: the package names per distribution (vars/<distribution or family>.yml; only Debian
runs here, tests/integration/test_role_bpf_host.py), and the /etc/default file it writes against the one
extras/host ships (same keys)."""

import os
import re

import jinja2
import pytest
import yaml
from harness import paths

ROLE = os.path.join(paths.REPO, "roles", "bpf_host")
KEYS = {"bpf_host__packages_base", "bpf_host__packages_bpftool", "bpf_host__packages_compile", "bpf_host__packages_bcc", "bpf_host__packages_bcc_headers"}
FACTS = {"kernel": "6.8.0-31-generic"}


def names(family: str) -> dict:
    """{key: package names} of vars/<family>.yml, templated with facts as Ansible would."""
    with open(os.path.join(ROLE, "vars", family + ".yml"), encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return {key: [env.from_string(name).render(ansible_facts=FACTS) for name in value] for key, value in data.items()}


@pytest.mark.parametrize("family", ["Debian", "Ubuntu", "RedHat"])
def test_every_family_names_each_package_group(family):
    data = names(family)
    assert set(data) == KEYS
    assert all(data[key] and all(isinstance(n, str) and re.match(r"^[a-z0-9][a-z0-9+.-]*$", n) for n in data[key]) for key in KEYS), data


def test_ubuntu_uses_debians_names_but_for_bpftool_which_comes_with_the_kernels_tools():
    debian, ubuntu = names("Debian"), names("Ubuntu")
    assert {k: v for k, v in ubuntu.items() if k != "bpf_host__packages_bpftool"} == {k: v for k, v in debian.items() if k != "bpf_host__packages_bpftool"}
    assert debian["bpf_host__packages_base"] == ["libbpf1", "python3", "python3-pyroute2", "python3-jmespath", "iproute2", "ethtool"]
    assert debian["bpf_host__packages_bpftool"] == ["bpftool"]
    assert ubuntu["bpf_host__packages_bpftool"] == ["linux-tools-common", "linux-tools-6.8.0-31-generic"]
    assert "clang" in debian["bpf_host__packages_compile"] and "libbpf-dev" in debian["bpf_host__packages_compile"]
    # bcc compiles against /lib/modules/<release>/build: the running kernel's own headers package
    assert debian["bpf_host__packages_bcc_headers"] == ubuntu["bpf_host__packages_bcc_headers"] == ["linux-headers-6.8.0-31-generic"]


def test_the_redhat_family_maps_each_debian_package_to_its_own_name():
    redhat = names("RedHat")
    assert redhat["bpf_host__packages_base"] == ["libbpf", "python3", "python3-pyroute2", "python3-jmespath", "iproute", "ethtool"]
    assert redhat["bpf_host__packages_compile"] == ["clang", "llvm", "libbpf-devel", "kernel-headers"]
    assert redhat["bpf_host__packages_bcc"] == ["python3-bcc"]
    assert redhat["bpf_host__packages_bcc_headers"] == ["kernel-devel-6.8.0-31-generic"]


def test_the_default_file_the_role_writes_has_the_keys_of_the_one_extras_ships():
    key = re.compile(r"^([A-Z_]+)=", re.M)
    with open(os.path.join(paths.REPO, "extras", "host", "ebpf-fleet.default"), encoding="utf-8") as handle:
        shipped = key.findall(handle.read())
    with open(os.path.join(ROLE, "templates", "ebpf-fleet.default.j2"), encoding="utf-8") as handle:
        written = key.findall(handle.read())
    assert written == shipped


def test_the_wrapper_has_a_default_for_each_setting_the_role_writes_into_it():
    with open(os.path.join(paths.REPO, "extras", "host", "ebpf-fleet-host"), encoding="utf-8") as handle:
        wrapper = handle.read()
    with open(os.path.join(ROLE, "vars", "main.yml"), encoding="utf-8") as handle:
        replaced = re.findall(r"\(\?<=(EBPF_FLEET_[A-Z_]+):-\)", handle.read())
    assert sorted(replaced) == ["EBPF_FLEET_LIB", "EBPF_FLEET_PYTHON", "EBPF_FLEET_STATE_DIR", "EBPF_FLEET_TEXTFILE_DIR"]
    for name in replaced:
        assert re.search(r'^%s="\$\{%s:-[^}]+\}"$' % (name, name), wrapper, re.M), name


def test_setup_installs_every_debian_package_the_role_installs_so_the_lab_host_is_already_prepared():
    # tests/integration/test_role_bpf_host.py runs the role on this machine and expects its package task to be
    # "ok": whatever the role would install on Debian, scripts/setup.sh installs on a fresh machine first
    with open(os.path.join(paths.REPO, "scripts", "setup.sh"), encoding="utf-8") as handle:
        block = re.search(r"^DEB_PACKAGES=\(\n(.*?)^\)", handle.read(), re.M | re.S)
    assert block, "scripts/setup.sh has no DEB_PACKAGES=( ... ) block"
    installed = set(block.group(1).split())
    # not the running kernel's headers package (bcc only; this machine's kernel has none: setup.sh links Debian's)
    role = {name for key, group in names("Debian").items() if key != "bpf_host__packages_bcc_headers" for name in group}
    assert role - installed == set(), "add these to DEB_PACKAGES in scripts/setup.sh"
