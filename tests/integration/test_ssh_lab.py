"""The SSH lab (scripts/lab.sh, EBFLAB_SSH=1): Ansible reaches the lab hosts over real SSH from a controller
namespace, so the management session crosses the hosts' XDP hooks, and `down` leaves nothing running.

Each test runs its own lab (prefix, pin root and folder of its own, addresses in 198.51.100.0/24 inside the lab's
namespaces) and tears it down, pass or fail.
"""

import os
import re
import subprocess
import time

import pytest
from harness import paths
from harness.ssh_lab import CONTROLLER_ADDRESS, SSHD, SshLab, alive, live_pids

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

SLEEP = os.path.realpath("/bin/sleep")
# an ad hoc command's result: "edge1 | CHANGED | rc=0 >>" and its output's (first) line
AD_HOC = re.compile(r"^(\S+) \| (\w+) \| rc=(\d+) >>\n(.*)$", re.M)

SSH_CONNECTION_PLAY = """\
- name: Read SSH_CONNECTION on the edges, with become like the collection's playbooks
  hosts: edges
  become: true
  gather_facts: false
  tasks:
    - name: Read it
      ansible.builtin.command:
        argv: [printenv, SSH_CONNECTION]
      register: ssh_connection
      changed_when: false
    - name: The session comes from the controller namespace
      ansible.builtin.assert:
        that: ssh_connection.stdout.split()[0] == '{controller}'
        quiet: true
"""

SLEEP_PLAY = """\
- name: A long task on edge1, like a watchdog that a run leaves behind
  hosts: edge1
  become: true
  gather_facts: false
  tasks:
    - name: Sleep
      ansible.builtin.command: sleep 7877
      changed_when: false
"""


def assert_no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out


def ad_hoc_results(proc) -> dict:
    """{host: (status, rc, first line of stdout)} from an ad hoc `ansible` run."""
    return {host: (status, int(rc), out) for host, status, rc, out in AD_HOC.findall(proc.stdout)}


def remote_sleeps(lab, host: str, seconds: int) -> list:
    """The `sleep SECONDS` processes in a lab host's namespace (not the ssh command lines that asked for them)."""
    return live_pids(exe=SLEEP, cmdline_contains="sleep %d" % seconds, netns_name=lab.netns(host))


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("expected %s within %s s" % (what, timeout))


@pytest.fixture
def ssh_lab(tmp_path_factory):
    """An SSH lab with two edges, up; down at the end, pass or fail. Its folder is a short one (ssh's control socket
    paths are limited; a test's own tmp_path is long, longer still under pytest-xdist)."""
    with SshLab(tmp_path_factory.mktemp("ssh"), edges=2) as lab:
        yield lab


def test_ssh_lab_reaches_edges_lb_and_backends_over_ssh_from_the_controller_namespace(ssh_lab):
    lab = ssh_lab
    inventory = open(lab.inventory, encoding="utf-8").read()
    for host in lab.hosts():
        line = "%s ansible_connection=ssh ansible_host=%s ansible_user=root ansible_ssh_common_args='-F %s' " % (host, lab.address(host), lab.ssh_config)
        assert "\n" + line in inventory, inventory
    assert re.search(r"^client ansible_host=%sclient ansible_netns=" % lab.prefix, inventory, re.M), inventory
    assert lab.ctl not in inventory and not re.search(r"^ctl ", inventory, re.M)  # the controller is no inventory host
    status = lab.sh("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"^ctl\s+%s\s+lab0 %s/24" % (lab.ctl, CONTROLLER_ADDRESS), status.stdout, re.M), status.stdout

    # a playbook with become from the controller namespace: the hosts see the session come from 198.51.100.2
    play = os.path.join(lab.dir, "ssh_connection.yml")
    with open(play, "w", encoding="utf-8") as handle:
        handle.write(SSH_CONNECTION_PLAY.format(controller=CONTROLLER_ADDRESS))
    proc = lab.playbook(play)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_warning(proc)
    assert re.search(r"^edge1\s+: ok=2 .*failed=0", proc.stdout, re.M), proc.stdout
    assert re.search(r"^edge2\s+: ok=2 .*failed=0", proc.stdout, re.M), proc.stdout

    # the same ad hoc, on every SSH host: root over SSH, become (skipped by Ansible for root to root)
    proc = lab.ansible("all:!clients", "ansible.builtin.command", "printenv SSH_CONNECTION", become=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_warning(proc)
    results = ad_hoc_results(proc)
    assert sorted(results) == sorted(lab.hosts()), proc.stdout
    for host, (_status, rc, out) in results.items():
        assert rc == 0 and out.split()[0] == CONTROLLER_ADDRESS and out.split()[2] == lab.address(host), proc.stdout

    # become through sudo for real (Ansible skips it for root to root unless told not to): root, by sudo
    proc = lab.ansible("edges", "ansible.builtin.shell", 'echo "$(id -u) ${SUDO_USER:-no-sudo}"', become=True, env={"ANSIBLE_BECOME_ALLOW_SAME_USER": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_warning(proc)
    assert {host: out for host, (_s, _rc, out) in ad_hoc_results(proc).items()} == {"edge1": "0 root", "edge2": "0 root"}, proc.stdout


def test_an_xdp_program_that_drops_everything_locks_the_controller_out_of_that_edge_only(ssh_lab):
    lab = ssh_lab
    drop = paths.bpf_object("floor_xdp_drop")  # tests/bpf/floor_xdp_drop.c: XDP_DROP, nothing else
    for host in ("edge1", "edge2"):
        proc = lab.ssh(host, "true")
        assert proc.returncode == 0, (host, proc.stderr)
    # a session that is open when the drop starts: the keep-alives (3 probes, 3 s apart) end it in about 10 s
    session = subprocess.Popen(lab.ssh_command("edge1", "sleep 1207"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: remote_sleeps(lab, "edge1", 1207), 15, "the session's sleep on edge1")
        subprocess.run(
            ["ip", "-n", lab.netns("edge1"), "link", "set", "dev", "lab0", "xdpdrv", "obj", drop, "sec", "xdp"], check=True, capture_output=True, text=True
        )
        started = time.monotonic()
        rc = session.wait(timeout=30)
        ended_after = time.monotonic() - started
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    assert rc == 255 and 6 <= ended_after <= 20, (rc, ended_after, session.stderr.read())

    # a new session cannot reach edge1 (ConnectTimeout 5); edge2 still answers
    started = time.monotonic()
    proc = lab.ssh("edge1", "true", timeout=30)
    assert proc.returncode == 255 and time.monotonic() - started < 15, (proc.returncode, proc.stderr)
    assert "port 22: Connection timed out" in proc.stderr, proc.stderr  # dropped, not refused
    proc = lab.ssh("edge2", "echo $SSH_CONNECTION")
    assert proc.returncode == 0 and proc.stdout.split()[0] == CONTROLLER_ADDRESS, proc.stderr

    # detached, edge1 answers again
    subprocess.run(["ip", "-n", lab.netns("edge1"), "link", "set", "dev", "lab0", "xdpdrv", "off"], check=True)
    proc = lab.ssh("edge1", "echo $SSH_CONNECTION")
    assert proc.returncode == 0 and proc.stdout.split()[0] == CONTROLLER_ADDRESS, proc.stderr


def test_ssh_lab_up_again_changes_nothing_and_down_leaves_no_namespace_process_pin_or_folder(ssh_lab):
    lab = ssh_lab
    pids = {host: lab.sshd_pid(host) for host in lab.hosts()}
    assert all(pids.values()), pids
    with open(os.path.join(lab.dir, "ssh", "known_hosts"), encoding="utf-8") as handle:
        known_hosts = handle.read()
    lab.up()
    assert {host: lab.sshd_pid(host) for host in lab.hosts()} == pids  # no sshd restarted
    with open(os.path.join(lab.dir, "ssh", "known_hosts"), encoding="utf-8") as handle:
        assert handle.read() == known_hosts  # no key made again
    proc = lab.ssh("edge1", "true")
    assert proc.returncode == 0, proc.stderr
    # sshd listens only on the host's lab address, in the host's namespace
    listening = subprocess.run(["nsenter", "--net=/run/netns/%s" % lab.netns("lb1"), "ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    assert [line.split()[3] for line in listening if line] == ["198.51.100.20:22"], listening
    # and none in the machine's own namespace (its uplink)
    host_listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    assert '"sshd"' not in host_listening, host_listening
    assert os.path.isdir(lab.pin_root("edge1"))

    # left running: a playbook in the controller namespace (its task on edge1) and a helper started over SSH
    play = os.path.join(lab.dir, "sleep.yml")
    with open(play, "w", encoding="utf-8") as handle:
        handle.write(SLEEP_PLAY)
    running = lab.playbook(play, background=True)
    proc = lab.ssh("edge2", "setsid sleep 7977 </dev/null >/dev/null 2>&1 &")
    assert proc.returncode == 0, proc.stderr
    left = wait_for(lambda: remote_sleeps(lab, "edge1", 7877), 60, "the playbook's sleep on edge1")
    left += wait_for(lambda: remote_sleeps(lab, "edge2", 7977), 10, "the helper started over SSH on edge2")
    assert running.poll() is None

    proc = lab.sh("down")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert running.wait(timeout=10) != 0  # the playbook was killed with its namespace
    assert lab.namespaces() == []
    assert [pid for pid in left if alive(pid)] == []
    assert live_pids(exe=SSHD, cmdline_contains=lab.dir) == []
    assert not os.path.exists(lab.pin_base)
    assert not os.path.exists(lab.dir)
    proc = lab.sh("down")  # idempotent
    assert proc.returncode == 0, proc.stdout + proc.stderr
