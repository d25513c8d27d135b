"""Hostile names and paths fail cleanly in every module, before anything in the kernel or on disk changes.

Each case runs the real module (a separate process, as Ansible runs it) inside a namespace with a veth pair,
and asserts: failed, a message naming the field, the value and what was expected, no traceback on stdout or
stderr, and nothing created: the pin root, the state directory, the namespace's links (XDP, qdiscs) and the
paths the hostile value points at are as they were.
"""

import json
import os

import pytest
from harness import paths
from harness.netns import unique

pytestmark = pytest.mark.kernel

HOSTILE_NAMES = ["a;touch /tmp/ebft-pwned", "$(id)", "..", "../evil", "a/b", "a.b", "n" * 65, "-", ""]
HOSTILE_IFNAMES = ["vb;ls", "..", "vb/..", "x" * 16, "vb.100"]


def tree(path):
    """Every file and folder below path (empty when path does not exist)."""
    out = []
    for top, dirs, files in os.walk(path):
        out += [os.path.join(top, name) for name in dirs + files]
    return sorted(out)


def kernel_view(ns):
    links = json.loads(ns.ip("-j", "-d", "link", "show").stdout)
    qdiscs = json.loads(ns.run(["tc", "-j", "qdisc", "show"]).stdout or "[]")
    return ([(link["ifname"], json.dumps(link.get("xdp"), sort_keys=True)) for link in links], sorted((q.get("dev"), q.get("kind")) for q in qdiscs))


@pytest.fixture
def lab(netns, pin_root, state_dir, tmp_path):
    ns = netns("hx")
    ns.veth("va", "vb", addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    outside = "/tmp/%s" % unique("pins")
    return dict(ns=ns, pin_root=pin_root, state_dir=state_dir, a_file=str(a_file), outside=outside)


def cases():
    """(module, field, value maker, extra args): value maker turns the lab into the hostile value."""
    out = []
    for module in ("xdp_program", "tc_program"):
        for name in HOSTILE_NAMES:
            out.append((module, "name", lambda lab, v=name: v))
        for ifname in HOSTILE_IFNAMES:
            out.append((module, "interfaces", lambda lab, v=ifname: [v]))
        out += [
            (module, "pin_root", lambda lab: lab["outside"]),
            (module, "pin_root", lambda lab: "/etc"),
            (module, "pin_root", lambda lab: lab["pin_root"] + "/../../../../tmp"),
            (module, "pin_root", lambda lab: lab["pin_root"] + "/a.b"),
            (module, "pin_root", lambda lab: "/sys/fs/bpf"),
            (module, "pin_root", lambda lab: "relative/pins"),
            (module, "state_dir", lambda lab: lab["a_file"] + "/state"),
            (module, "state_dir", lambda lab: lab["a_file"]),
            (module, "state_dir", lambda lab: lab["state_dir"] + "/../../x"),
            (module, "state_dir", lambda lab: "/proc/ebft_state"),
            (module, "state_dir", lambda lab: lab["pin_root"] + "/state"),
            (module, "state_dir", lambda lab: "/"),
        ]
    for name in ("a;b", "..", "a/b", "a.b", "n" * 65):
        out.append(("bpf_map", "name", lambda lab, v=name: v))
        out.append(("bpf_map", "map", lambda lab, v=name: v))
    out += [
        ("bpf_map", "pin_root", lambda lab: lab["outside"]),
        ("bpf_map", "pin_root", lambda lab: lab["pin_root"] + "/../../../../etc"),
        ("bpf_map", "path", lambda lab: "/etc/passwd"),
        ("bpf_map", "path", lambda lab: lab["pin_root"] + "/../../../../../etc/passwd"),
        ("bpf_info", "interfaces", lambda lab: ["vb;ls"]),
        ("bpf_info", "interfaces", lambda lab: [".."]),
        ("bpf_info", "pin_root", lambda lab: "/etc"),
        ("bpf_info", "state_dir", lambda lab: lab["a_file"] + "/state"),
        ("xdp_support", "interfaces", lambda lab: ["vb;ls"]),
        ("xdp_support", "interfaces", lambda lab: ["x" * 16]),
        ("xdp_support", "interfaces", lambda lab: ["../vb"]),
    ]
    return out


def base_args(module, lab):
    if module == "xdp_program":
        return dict(name="guard", object=paths.bpf_object("xdp_drop_udp"), interfaces=["vb"], pin_root=lab["pin_root"], state_dir=lab["state_dir"])
    if module == "tc_program":
        return dict(
            name="guard", object=paths.bpf_object("tc_drop_udp"), interfaces=["vb"], direction="egress", pin_root=lab["pin_root"], state_dir=lab["state_dir"]
        )
    if module == "bpf_map":
        return dict(name="guard", map="drops", pin_root=lab["pin_root"], entries=[{"key": 0, "value": 0}])
    if module == "bpf_info":
        return dict(interfaces=["vb"], pin_root=lab["pin_root"], state_dir=lab["state_dir"])
    return dict(interfaces=["vb"], probe=True)


CASES = cases()


@pytest.mark.parametrize("module, field, make", CASES, ids=["%s-%s-%d" % (case[0], case[1], i) for i, case in enumerate(CASES)])
def test_hostile_names_and_paths_fail_before_anything_changes(lab, run_module, module, field, make):
    value = make(lab)
    args = base_args(module, lab)
    if field == "path":
        args.pop("name")
        args.pop("map")
    args[field] = value
    watched = [lab["pin_root"], lab["state_dir"], os.path.dirname(lab["pin_root"])]
    before = [tree(path) for path in watched], kernel_view(lab["ns"])
    res = run_module(module, args, netns=lab["ns"])
    after = [tree(path) for path in watched], kernel_view(lab["ns"])
    assert res.failed, res
    assert "Traceback" not in res["_stdout"] + res["_stderr"], res["_stdout"] + res["_stderr"]
    msg = res["msg"]
    assert msg.startswith(field), msg
    assert "expected" in msg, msg
    shown = value[0] if isinstance(value, list) else value
    assert repr(shown)[:60] in msg or shown[:60] in msg, msg
    assert res.get("field") == field, res
    assert after == before
    assert not os.path.exists(lab["outside"]) and not os.path.exists("/tmp/ebft-pwned")
    assert not os.path.exists("/proc/ebft_state")


@pytest.mark.playbook
def test_a_hostile_name_through_ansible_playbook_fails_with_the_message_and_no_traceback(lab, tmp_path):
    """What the operator sees: the task fails with the message; no traceback, no warning, nothing created."""
    from harness.runner import run_playbook

    playbook = tmp_path / "play.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "hostile",
                            "ebpf.fleet.xdp_program": {
                                "name": "../evil; rm -rf /",
                                "object": paths.bpf_object("xdp_drop_udp"),
                                "interfaces": ["vb"],
                                "pin_root": lab["pin_root"],
                                "state_dir": lab["state_dir"],
                            },
                        }
                    ],
                }
            ]
        )
    )
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("lab ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % lab["ns"].name)
    before = tree(lab["pin_root"]), tree(lab["state_dir"]), kernel_view(lab["ns"])
    proc = run_playbook(str(playbook), inventory=str(inventory))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "failed=1" in proc.stdout, output
    assert "name='../evil; rm -rf /' is not a valid name: expected 1 to 64 characters" in proc.stdout, output
    assert "Traceback" not in output and "[WARNING]" not in output and "[DEPRECATION WARNING]" not in output, output
    assert (tree(lab["pin_root"]), tree(lab["state_dir"]), kernel_view(lab["ns"])) == before
