"""What `make demo` does, in CI: the namespace lab with the example inventory, `ansible-playbook
ebpf.fleet.deploy_xdp` twice (all three functions on five hosts; the second run changed=0), real traffic through
the filter, the load balancer (each connection on the backend Maglev gives it) and the egress program, the
counters, the chart.

The lab runs under its own prefix, pin root and folder (scripts/lab.sh reads them from the environment), so
it never meets a user's lab; it is torn down at the end, pass or fail, and nothing may be left.
"""

import json
import os
import re
import subprocess

import pytest
import yaml
from harness import bpffs as harness_bpffs
from harness import netns as harness_netns
from harness import paths
from harness.runner import run_module, run_playbook

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

LAB = os.path.join(paths.REPO, "scripts", "lab.sh")
TRAFFIC = os.path.join(paths.REPO, "playbooks", "vars", "lab_demo.yml")
SCRIPT = os.path.join(paths.REPO, "playbooks", "files", "lab_traffic.py")
HOSTS = ("client", "edge1", "edge2", "lb1", "backend1", "backend2")
FUNCTION_HOSTS = {"edge1": ["filter"], "edge2": ["filter"], "lb1": ["lb"], "backend1": ["egress"], "backend2": ["egress"]}
VIP, CLIENT = "203.0.113.10", "198.51.100.33"
BACKEND_ADDRESSES = {"198.51.100.21": "backend1", "198.51.100.22": "backend2"}
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def assert_no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out


def recap(proc) -> dict:
    """{host: (changed, unreachable, failed)} from a playbook's PLAY RECAP."""
    return {host: tuple(int(n) for n in nums) for host, *nums in RECAP.findall(proc.stdout)}


@pytest.fixture
def lab(tmp_path):
    """scripts/lab.sh up with a prefix, pin root and folder of this test run; down afterwards."""
    env = dict(
        os.environ,
        EBFLAB_PREFIX="%s%slab-" % (harness_netns.PREFIX, harness_netns.RUN_ID),
        EBFLAB_DIR=str(tmp_path / "lab"),
        EBFLAB_PIN_ROOT=os.path.join(harness_bpffs.TEST_PIN_BASE, harness_netns.unique("lab")),
        EBFLAB_PYTHON=paths.PYTHON,
    )

    def run(*args):
        return subprocess.run(["bash", LAB] + list(args), env=env, capture_output=True, text=True, timeout=120, check=False)

    try:
        yield env, run
    finally:
        run("down")


def lab_namespaces(prefix: str) -> list:
    try:
        return sorted(name for name in os.listdir("/run/netns") if name.startswith(prefix))
    except FileNotFoundError:
        return []


def info(env, host, **args):
    result = run_module(
        "bpf_info",
        dict({"pin_root": os.path.join(env["EBFLAB_PIN_ROOT"], host), "state_dir": os.path.join(env["EBFLAB_DIR"], "state", host, "records")}, **args),
        netns=env["EBFLAB_PREFIX"] + host,
    )
    assert not result.failed, result
    return result["query_result"]


def maglev_choice(sport: int) -> str:
    """The backend the VIP's ring gives the flow CLIENT:sport -> VIP:80/tcp (both backends weight 1, keyed by address)."""
    table = maglev.build_table([(address, 1) for address in sorted(BACKEND_ADDRESSES)], maglev.DEFAULT_RING_SIZE)
    slot = maglev.slot_of(maglev.flow_hash(CLIENT, VIP, sport, 80, 6), maglev.DEFAULT_RING_SIZE)
    return BACKEND_ADDRESSES[sorted(BACKEND_ADDRESSES)[table[slot]]]


def test_demo_lab_deploys_the_example_inventory_idempotently_and_counts_real_traffic_then_leaves_nothing(lab):
    env, run = lab
    prefix, lab_dir, pin_base = env["EBFLAB_PREFIX"], env["EBFLAB_DIR"], env["EBFLAB_PIN_ROOT"]
    for _attempt in range(2):  # up is idempotent
        proc = run("up")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab_namespaces(prefix) == sorted(prefix + host for host in HOSTS)
    assert run("status").returncode == 0
    inventory = os.path.join(lab_dir, "inventory.ini")
    text = open(inventory, encoding="utf-8").read()
    for host in HOSTS[1:]:  # each host: its own pin root and state dir
        assert "ebpf_fleet_pin_root=%s/%s " % (pin_base, host) in text
        assert "ebpf_fleet_state_dir=%s/state/%s/records " % (lab_dir, host) in text
    # the group_vars are the example inventory's
    example = os.path.join(paths.REPO, "examples", "inventory", "group_vars")
    assert sorted(os.listdir(os.path.join(lab_dir, "group_vars"))) == sorted(os.listdir(example) + ["lab.yml"])

    # the main job by its name, as an installed collection runs it: every function, then nothing to change
    first = run_playbook("ebpf.fleet.deploy_xdp", inventory=inventory)
    assert first.returncode == 0, first.stdout + first.stderr
    assert_no_warning(first)
    assert all(recap(first)[host][0] > 0 for host in FUNCTION_HOSTS), first.stdout
    second = run_playbook("ebpf.fleet.deploy_xdp", inventory=inventory)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_no_warning(second)
    assert recap(second) == {host: (0, 0, 0) for host in HOSTS}, second.stdout
    for host, deployments in FUNCTION_HOSTS.items():
        assert sorted(info(env, host, query="keys(deployments)")) == deployments, host
    for host in ("edge1", "edge2", "lb1"):
        link = json.loads(subprocess.run(["ip", "-n", prefix + host, "-j", "-d", "link", "show", "lab0"], capture_output=True, text=True, check=True).stdout)[0]
        assert link["xdp"]["mode"] == 1  # native XDP on the host's veth

    # the client: the filter cases to both edges, and connections to the VIP, each on the backend Maglev gives it
    with open(TRAFFIC, encoding="utf-8") as handle:
        cases = yaml.safe_load(handle)["lab_filter_cases"]
    spec = {"targets": {"edge1": "198.51.100.11", "edge2": "198.51.100.12"}, "cases": cases, "count": 2, "timeout": 0.3}
    sent = json.loads(harness_netns.in_netns(prefix + "client", [paths.PYTHON, SCRIPT, json.dumps(spec)]).stdout)
    for host in ("edge1", "edge2"):
        answered = {name: result["answered"] for name, result in sent[host].items()}
        assert answered == {"web": 2, "dns": 0, "other_udp": 0, "denied_source_web": 0, "ssh_from_mgmt": 2, "ssh_from_client": 0}, host
    sports = list(range(31001, 31041))
    spec = {"dst": VIP, "port": 80, "src": CLIENT, "sports": sports}
    got = json.loads(harness_netns.in_netns(prefix + "client", [paths.PYTHON, SCRIPT, json.dumps(spec)]).stdout)
    assert got == {str(sport): maglev_choice(sport) for sport in sports}
    assert set(got.values()) == {"backend1", "backend2"}

    # the demo playbook wraps the same: deploy (nothing to change), traffic, summary, verdict checks, the JSON
    out_dir = os.path.join(lab_dir, "demo")
    os.makedirs(out_dir)
    demo = run_playbook(os.path.join(paths.REPO, "playbooks", "demo.yml"), inventory=inventory, extra_vars={"demo_output_dir": out_dir})
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert_no_warning(demo)
    assert set(recap(demo).values()) == {(0, 0, 0)}, demo.stdout
    with open(os.path.join(out_dir, "demo_summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    for host in ("edge1", "edge2"):
        # at least the cases' packets, by the reason the policy gives them (ARP passes as non_ip; a TCP attempt may
        # send more than its SYN); what each case got is checked exactly above and by the playbook's own assert
        counts = summary[host]["filter"]
        want = {"pass": {"mgmt": 2, "port": 2}, "drop": {"default": 4, "source": 2, "port": 2}}
        assert all(counts[verdict].get(reason, 0) >= n for verdict, reasons in want.items() for reason, n in reasons.items()), counts
    assert summary["lb1"]["lb"]["backends"] == {name: list(map(maglev_choice, range(30001, 30041))).count(name) for name in ("backend1", "backend2")}
    for host in ("backend1", "backend2"):
        egress = summary[host]["egress"]
        assert egress["blocked"] == {"drop": 2}, egress  # the UDP to the discard port never left
        assert egress["clients"]["pass"] > 0, egress  # answers to the client, marked AF21
    assert "answered by: backend1" in demo.stdout and "class blocked: drop 2" in demo.stdout, demo.stdout

    # make demo's chart of the same numbers
    png = os.path.join(out_dir, "demo.png")
    chart = subprocess.run(
        [paths.PYTHON, os.path.join(paths.REPO, "scripts", "demo_chart.py"), os.path.join(out_dir, "demo_summary.json"), png],
        capture_output=True,
        text=True,
        check=False,
    )
    assert chart.returncode == 0, chart.stdout + chart.stderr
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    proc = run("down")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab_namespaces(prefix) == []
    assert not os.path.exists(pin_base)
    assert not os.path.exists(lab_dir)
    assert run("status").returncode != 0
    assert run("down").returncode == 0  # down is idempotent
