"""The SSH lab (scripts/lab.sh with EBFLAB_SSH=1) under a prefix, pin root and folder of one test.

Edges, lb1 and the backends each run an sshd on their lab address; Ansible reaches them with
ansible_connection=ssh from the controller namespace <prefix>ctl (198.51.100.2), so every management packet
crosses the hosts' XDP and TC hooks. `playbook()` and `ansible()` run there through
`nsenter --net=/run/netns/<prefix>ctl` (only the network namespace changes: bpffs and the files stay visible).

    with SshLab(tmp_path, edges=2) as lab:            # up; down when the block ends, pass or fail
        proc = lab.playbook("playbooks/deploy_xdp.yml")         # a CompletedProcess
        running = lab.playbook(path, background=True)           # a Popen (ansible-playbook itself)
        proc = lab.finish(running)                              # wait; its output as a CompletedProcess
"""

import itertools
import os
import subprocess

from . import bpffs, netns, paths
from .runner import playbook_command, playbook_env

LAB_SCRIPT = os.path.join(paths.REPO, "scripts", "lab.sh")
SSHD = "/usr/sbin/sshd"
CONTROLLER_ADDRESS = "198.51.100.2"
ADDRESSES = {"ctl": CONTROLLER_ADDRESS, "lb1": "198.51.100.20", "backend1": "198.51.100.21", "backend2": "198.51.100.22"}
ADDRESSES.update({"edge%d" % n: "198.51.100.%d" % (10 + n) for n in range(1, 10)})


def ansible_env(env: dict = None) -> dict:
    """The environment of harness.runner.run_playbook, with host key checking on: the lab has real known_hosts."""
    return playbook_env(dict({"ANSIBLE_HOST_KEY_CHECKING": "1"}, **(env or {})))


def live_pids(exe: str = None, cmdline_contains: str = None, netns_name: str = None) -> list:
    """Pids of live processes (not zombies) whose executable is `exe`, whose command line holds a string, and
    that run in the network namespace /run/netns/<netns_name> (each filter when given)."""
    found = []
    netns_inode = os.stat("/run/netns/%s" % netns_name).st_ino if netns_name else None
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if exe is not None and os.readlink("/proc/%s/exe" % name) != exe:
                continue
            if netns_inode is not None and os.stat("/proc/%s/ns/net" % name).st_ino != netns_inode:
                continue
            with open("/proc/%s/cmdline" % name, "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or a zombie (no exe)
            continue
        if cmdline_contains is None or cmdline_contains in cmdline:
            found.append(int(name))
    return found


def alive(pid: int) -> bool:
    """The process runs (a zombie, which only waits for its parent, does not)."""
    try:
        os.readlink("/proc/%d/exe" % pid)
        return True
    except OSError:
        return False


class SshLab:
    """One SSH lab. `up()` / `down()` (or a `with` block); down removes everything, whatever state it is in."""

    _logs = itertools.count()

    def __init__(self, tmp_path, edges: int = 2):
        self.prefix = netns.unique("ssh") + "-"
        self.dir = str(tmp_path / "lab")
        self.logs = str(tmp_path / "logs")
        self.pin_base = os.path.join(bpffs.TEST_PIN_BASE, netns.unique("ssh"))
        self.edges = edges
        self.env = dict(
            os.environ,
            EBFLAB_PREFIX=self.prefix,
            EBFLAB_DIR=self.dir,
            EBFLAB_PIN_ROOT=self.pin_base,
            EBFLAB_PYTHON=paths.PYTHON,
            EBFLAB_EDGES=str(edges),
            EBFLAB_SSH="1",
        )
        self.inventory = os.path.join(self.dir, "inventory.ini")
        self.ssh_config = os.path.join(self.dir, "ssh", "config")
        self.ctl = self.prefix + "ctl"
        self.running = []

    # the lab itself

    def sh(self, *args, timeout=120) -> subprocess.CompletedProcess:
        """bash scripts/lab.sh ARGS with this lab's environment."""
        return subprocess.run(["bash", LAB_SCRIPT] + list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def up(self) -> subprocess.CompletedProcess:
        proc = self.sh("up")
        if proc.returncode != 0:
            raise AssertionError("scripts/lab.sh up (EBFLAB_SSH=1): expected exit 0, got %d\n%s%s" % (proc.returncode, proc.stdout, proc.stderr))
        return proc

    def down(self) -> subprocess.CompletedProcess:
        """lab.sh down (kills whatever runs in the lab's namespaces), then reaps the playbooks started here."""
        proc = self.sh("down")
        for running in self.running:
            if running.poll() is None:
                running.kill()
            running.wait(timeout=30)
        return proc

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    # what a test asks about it

    def hosts(self) -> list:
        """The hosts with an sshd: edges, lb1, backends."""
        return ["edge%d" % n for n in range(1, self.edges + 1)] + ["lb1", "backend1", "backend2"]

    def netns(self, host: str) -> str:
        return self.prefix + host

    @staticmethod
    def address(host: str) -> str:
        return ADDRESSES[host]

    def pin_root(self, host: str) -> str:
        return os.path.join(self.pin_base, host)

    def sshd_pid(self, host: str):
        """The pid of the host's running sshd, or None."""
        try:
            with open(os.path.join(self.dir, "state", host, "sshd.pid"), encoding="utf-8") as handle:
                pid = int(handle.read().strip())
            return pid if os.readlink("/proc/%d/exe" % pid) == SSHD else None
        except (OSError, ValueError):
            return None

    def namespaces(self) -> list:
        try:
            return sorted(name for name in os.listdir("/run/netns") if name.startswith(self.prefix))
        except FileNotFoundError:
            return []

    # commands from the controller namespace

    def in_ctl(self, cmd: list) -> list:
        """cmd run inside the controller namespace."""
        return ["nsenter", "--net=/run/netns/%s" % self.ctl] + list(cmd)

    def ssh_command(self, host: str, command: str, batch=True) -> list:
        """ssh from the controller to a lab host with the lab's client config (keys, known_hosts, keep-alives)."""
        opts = ["-o", "BatchMode=yes"] if batch else []
        return self.in_ctl(["ssh", "-F", self.ssh_config] + opts + [host, command])

    def ssh(self, host: str, command: str, timeout=60) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_command(host, command), capture_output=True, text=True, timeout=timeout, check=False)

    def playbook_command(self, playbook: str, extra_vars: dict = None, check=False, diff=False, limit=None, args=()) -> list:
        cmd = playbook_command(playbook, self.inventory, extra_vars, check, diff)
        if limit:
            cmd += ["--limit", limit]
        return self.in_ctl(cmd + list(args))

    def playbook(self, playbook: str, extra_vars: dict = None, check=False, diff=False, limit=None, args=(), env: dict = None, timeout=600, background=False):
        """ansible-playbook in the controller namespace against the lab's inventory.

        Returns a CompletedProcess, or with background=True the Popen of ansible-playbook itself (nsenter execs
        it: its pid is the playbook's, for a test that kills it), its stdout and stderr going to files that
        `finish()` reads. The lab's `down` kills and reaps it if it still runs.
        """
        cmd = self.playbook_command(playbook, extra_vars, check, diff, limit, args)
        if not background:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ansible_env(env), check=False)
        os.makedirs(self.logs, exist_ok=True)
        base = os.path.join(self.logs, "playbook-%d" % next(self._logs))
        with open(base + ".out", "w", encoding="utf-8") as out, open(base + ".err", "w", encoding="utf-8") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=ansible_env(env))
        proc.log_base = base
        self.running.append(proc)
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen, timeout=600) -> subprocess.CompletedProcess:
        """Wait for a background playbook; its exit code and output as a CompletedProcess."""
        returncode = proc.wait(timeout=timeout)
        with open(proc.log_base + ".out", encoding="utf-8") as out, open(proc.log_base + ".err", encoding="utf-8") as err:
            return subprocess.CompletedProcess(proc.args, returncode, out.read(), err.read())

    def ansible(self, pattern: str, module: str, module_args: str = "", become=False, env: dict = None, args=(), timeout=300) -> subprocess.CompletedProcess:
        """An ad hoc `ansible PATTERN -m MODULE -a ARGS` in the controller namespace."""
        cmd = [os.path.join(os.path.dirname(paths.PYTHON), "ansible"), pattern, "-i", self.inventory, "-m", module]
        if module_args:
            cmd += ["-a", module_args]
        if become:
            cmd.append("--become")
        return subprocess.run(self.in_ctl(cmd + list(args)), capture_output=True, text=True, timeout=timeout, env=ansible_env(env), check=False)
