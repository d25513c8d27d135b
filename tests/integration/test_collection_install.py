"""The Galaxy tarball: what it carries, that it installs, and that its modules, playbooks and lab run from the
installed copy (nothing from the checkout on any path)."""

import glob
import json
import os
import re
import subprocess

import pytest
import yaml
from harness import bpffs as harness_bpffs
from harness import netns as harness_netns
from harness import paths
from harness.runner import run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

BIN = os.path.dirname(paths.PYTHON)
# every file under these folders of the checkout must ship
SHIPPED_TREES = ("plugins", "playbooks", "roles", "bpf", "docs", "meta", "extras", "examples")
SHIPPED_FILES = ("README.md", "LICENSE", "bpf/LICENSE", "CHANGELOG.md", "scripts/lab.sh", "requirements/controller.txt", "tests/sanity/ignore-2.19.txt")
# nothing of the development tree, the build or caches
NOT_SHIPPED = re.compile(
    r"^(tests/(bench|bpf|harness|integration|unit)/|tests/conftest\.py$|build/|\.venv|\.ci/|"
    r"\.git/|Makefile$|execution-environment\.yml$|scripts/(setup\.sh|summary\.py|ansible_test_get_pip\.py)$)"
    r"|(^|/)(__pycache__|\.pytest_cache|\.ansible)(/|$)|\.(o|pyc|tar\.gz)$"
)


def galaxy(*args, cwd=None, env=None):
    return subprocess.run([os.path.join(BIN, "ansible-galaxy")] + list(args), capture_output=True, text=True, cwd=cwd or paths.REPO, env=env, check=False)


def assert_no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    built = galaxy("collection", "build", "--force", "--output-path", str(dist), paths.REPO)
    assert built.returncode == 0, built.stdout + built.stderr
    tarballs = list(dist.glob("ebpf-fleet-*.tar.gz"))
    assert len(tarballs) == 1
    return tarballs[0]


@pytest.fixture
def installed(tarball, tmp_path):
    target = tmp_path / "collections"
    # the target is the only collections path: a copy in ~/.ansible/collections (molecule's prerun makes one)
    # would make ansible-galaxy say "already installed" and install nothing
    result = galaxy("collection", "install", "-p", str(target), str(tarball), env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(target)))
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def checkout_files(tree: str) -> set:
    out = set()
    for top, dirs, names in os.walk(os.path.join(paths.REPO, tree)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out |= {os.path.relpath(os.path.join(top, n), paths.REPO) for n in names if not n.endswith(".pyc")}
    return out


def test_tarball_carries_what_users_run_and_read_and_nothing_of_the_development_tree(tarball):
    listing = set(subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True, check=True).stdout.split())
    files = {name for name in listing if not name.endswith("/")}
    for tree in SHIPPED_TREES:
        missing = checkout_files(tree) - files
        assert not missing, "%s: not in the tarball: %s" % (tree, sorted(missing))
    assert set(SHIPPED_FILES) <= files, sorted(set(SHIPPED_FILES) - files)
    assert {"bpf/xdp_filter.c", "bpf/tc_egress.c", "bpf/xdp_lb.c", "bpf/include/fleet/filter.h"} <= files
    unwanted = sorted(name for name in listing if NOT_SHIPPED.search(name))
    assert unwanted == [], unwanted

    # every script and playbook the shipped docs tell a user to run is in the tarball
    told = set()
    for doc in ["README.md"] + sorted(glob.glob(os.path.join(paths.REPO, "docs", "*.md"))):
        with open(os.path.join(paths.REPO, doc), encoding="utf-8") as handle:
            told |= set(re.findall(r"\b((?:scripts|playbooks)/[\w./-]+\.(?:sh|yml|py|j2))\b", handle.read()))
    assert told and "scripts/lab.sh" in told
    checkout_only = {"scripts/setup.sh"}  # the docs name it as what stays in the git checkout
    assert told - checkout_only <= files, sorted(told - checkout_only - files)

    # the metadata points at the project, not a placeholder
    manifest = json.loads(subprocess.run(["tar", "-xzOf", str(tarball), "MANIFEST.json"], capture_output=True, text=True, check=True).stdout)["collection_info"]
    for key in ("repository", "documentation", "issues", "homepage"):
        assert manifest[key].startswith("https://github.com/ebpf-fleet/ebpf.fleet"), (key, manifest[key])


def test_built_tarball_installs_and_xdp_support_runs_from_it(installed, tmp_path, netns):
    module_path = installed / "ansible_collections" / "ebpf" / "fleet" / "plugins" / "modules" / "xdp_support.py"
    assert module_path.exists()

    host = netns("i")
    host.veth("in0", "in1")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("lab ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % host.name)
    out, found = tmp_path / "result.json", tmp_path / "found.txt"
    playbook = tmp_path / "play.yml"
    # docs/lab.md's recipe for a playbook of one's own to find the bundled C sources
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "lab",
                    "gather_facts": False,
                    "vars": {
                        "ebpf_fleet_dir": "{{ (lookup('ansible.builtin.config', 'COLLECTIONS_PATHS') + [playbook_dir ~ "
                        "'/collections']) | map('regex_replace', '$', '/ansible_collections/ebpf/fleet') "
                        "| select('ansible.builtin.directory') | first }}"
                    },
                    "tasks": [
                        {"ebpf.fleet.xdp_support": {"interfaces": ["in0"]}, "register": "support"},
                        {"ansible.builtin.copy": {"content": "{{ support | to_json }}", "dest": str(out)}},
                        {"ansible.builtin.copy": {"content": "{{ ebpf_fleet_dir }}/bpf/xdp_filter.c", "dest": str(found)}},
                    ],
                }
            ]
        )
    )
    proc = run_playbook(str(playbook), inventory=str(inventory), env={"ANSIBLE_COLLECTIONS_PATH": str(installed), "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["interfaces"]["in0"]["native"]["supported"] == "yes"
    source = found.read_text()
    assert source == str(installed / "ansible_collections" / "ebpf" / "fleet" / "bpf" / "xdp_filter.c")
    assert os.path.isfile(source)


def test_installed_collection_runs_its_lab_and_deploys_the_bundled_filter_by_playbook_name(installed, tmp_path):
    """docs/lab.md's recipe for an installed collection: its lab.sh, then `ansible-playbook ebpf.fleet.deploy_xdp`."""
    root = installed / "ansible_collections" / "ebpf" / "fleet"
    lab_dir = tmp_path / "lab"
    env = dict(
        os.environ,
        EBFLAB_PREFIX="%s%sinst-" % (harness_netns.PREFIX, harness_netns.RUN_ID),
        EBFLAB_DIR=str(lab_dir),
        EBFLAB_EDGES="1",
        EBFLAB_PYTHON=paths.PYTHON,
        EBFLAB_PIN_ROOT=os.path.join(harness_bpffs.TEST_PIN_BASE, harness_netns.unique("inst")),
    )

    def lab(*args):
        return subprocess.run(["bash", str(root / "scripts" / "lab.sh")] + list(args), env=env, capture_output=True, text=True, timeout=120, check=False)

    try:
        up = lab("up")
        assert up.returncode == 0, up.stdout + up.stderr
        for _run in ("first", "again"):
            proc = run_playbook(
                "ebpf.fleet.deploy_xdp", inventory=str(lab_dir / "inventory.ini"), env={"ANSIBLE_COLLECTIONS_PATH": str(installed), "PYTHONPATH": ""}
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert_no_warning(proc)
        # the second run: all three functions in place on the lab's hosts, nothing to change
        assert re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M) == [
            (host, "0") for host in ("backend1", "backend2", "client", "edge1", "lb1")
        ], proc.stdout
        for host, name in (("edge1", "filter"), ("lb1", "lb"), ("backend1", "egress"), ("backend2", "egress")):
            assert (lab_dir / "state" / host / "records" / name / "deployment.json").is_file(), (host, name)
        with open(lab_dir / "state" / "edge1" / "records" / "filter" / "deployment.json", encoding="utf-8") as handle:
            record = json.load(handle)
        # the filter was compiled from the installed collection's bpf/xdp_filter.c
        assert os.path.realpath(record["source"]) == str((root / "bpf" / "xdp_filter.c").resolve()), record
        link = json.loads(
            subprocess.run(["ip", "-n", env["EBFLAB_PREFIX"] + "edge1", "-j", "-d", "link", "show", "lab0"], capture_output=True, text=True, check=True).stdout
        )[0]
        assert link["xdp"]["mode"] == 1
    finally:
        down = lab("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not lab_dir.exists()
