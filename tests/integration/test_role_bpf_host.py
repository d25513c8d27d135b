"""Role ebpf.fleet.bpf_host through ansible-playbook on a lab host (a network namespace sharing this machine's
file system): packages, bpffs mounted now and in an fstab file, the host command with its settings and units,
the state and metrics folders, the XDP and TC interface checks; re-run changed=0, check mode writes nothing,
absent leaves nothing behind and is refused while deployments are recorded, the installed units' ExecStart
restores and writes metrics, a wrong variable type fails with the argument spec's message, no warning anywhere.

Every path the role writes points into tmp_path; the folders a real host has (/etc/default, /usr/local/sbin,
/etc/systemd/system, the bpffs mount point) are made first, the others are the role's to create and remove.
"""

import json
import os
import re
import shutil
import subprocess
import zipfile

import pytest
from harness import host_units, paths
from harness.runner import run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.M)
UNITS = ("ebpf-fleet-restore.service", "ebpf-fleet-metrics.service", "ebpf-fleet-metrics.timer")
FSTAB = "# /etc/fstab: static file system information.\nproc /proc proc defaults 0 0\n"

PLAYBOOK = """
- name: Prepare the host for ebpf.fleet
  hosts: lab
  gather_facts: false
  become: true
  roles:
    - role: ebpf.fleet.bpf_host
"""


def mounted_bpffs() -> list:
    with open("/proc/self/mounts", encoding="utf-8") as handle:
        return [line.split()[1] for line in handle if line.split()[2] == "bpf"]


class Host:
    """A lab host and the tmp_path folders that stand for its /etc, /usr/local, /var/lib and bpffs."""

    def __init__(self, netns, tmp_path, pin_root):
        self.ns = netns("bph")
        self.tmp = tmp_path
        root = tmp_path / "root"
        self.root = root
        self.fstab = root / "etc" / "fstab"
        self.mount = root / "sys" / "fs" / "bpf"
        self.default_file = root / "etc" / "default" / "ebpf-fleet"
        self.command = root / "usr" / "local" / "sbin" / "ebpf-fleet-host"
        self.unit_dir = root / "etc" / "systemd" / "system"
        self.lib = root / "usr" / "local" / "lib" / "ebpf-fleet"
        self.metrics = root / "var" / "lib" / "prometheus" / "node-exporter"
        self.state_dir = root / "var" / "lib" / "ebpf_fleet"
        self.pin_root = pin_root
        for folder in (self.mount, self.default_file.parent, self.command.parent, self.unit_dir, self.lib.parent):
            folder.mkdir(parents=True)
        self.fstab.write_text(FSTAB)
        (tmp_path / "inventory.ini").write_text(
            "[lab]\nlab1 ansible_connection=ebpf.fleet.netns ansible_netns=%s ebpf_fleet_state_dir=%s "
            "ebpf_fleet_pin_root=%s\n" % (self.ns.name, self.state_dir, pin_root)
        )
        (tmp_path / "play.yml").write_text(PLAYBOOK)

    def variables(self) -> dict:
        return {
            "bpf_host_bpffs_mount": str(self.mount),
            "bpf_host_fstab_file": str(self.fstab),
            "bpf_host_default_file": str(self.default_file),
            "bpf_host_command_path": str(self.command),
            "bpf_host_unit_dir": str(self.unit_dir),
            "bpf_host_lib_dir": str(self.lib),
            "bpf_host_metrics_dir": str(self.metrics),
            "bpf_host_install_packages": False,
        }

    def play(self, check=False, **variables):
        extra = self.variables()
        extra.update(variables)
        proc = run_playbook(str(self.tmp / "play.yml"), inventory=str(self.tmp / "inventory.ini"), extra_vars=extra, check=check, diff=check)
        out = proc.stdout + proc.stderr
        assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
        return proc

    def changed(self, proc) -> int:
        return int(dict(RECAP.findall(proc.stdout))["lab1"])

    def snapshot(self) -> dict:
        """Every file and folder under the host's root: {relative path: (mode, contents or None)}."""
        out = {}
        for top, dirs, files in os.walk(self.root):
            if top == str(self.mount):
                dirs[:] = files[:] = []  # bpffs when mounted: pins, not files
            for name in dirs + files:
                path = os.path.join(top, name)
                info = os.lstat(path)
                data = open(path, "rb").read() if os.path.isfile(path) else None
                # the mount point's mode is bpffs's while mounted (absent leaves it mounted)
                mode = "mount point" if path == str(self.mount) else oct(info.st_mode)
                out[os.path.relpath(path, self.root)] = (mode, data)
        return out

    def is_mounted(self) -> bool:
        return str(self.mount) in mounted_bpffs()

    def unmount(self):
        while self.is_mounted():
            subprocess.run(["umount", str(self.mount)], check=True)


@pytest.fixture
def host(netns, tmp_path, pin_root):
    lab = Host(netns, tmp_path, pin_root)
    try:
        yield lab
    finally:
        lab.unmount()


def test_present_idempotent_check_mode_writes_nothing_and_absent_leaves_nothing_behind(host):
    fresh = host.snapshot()
    assert not host.is_mounted()

    check = host.play(check=True)
    assert check.returncode == 0, check.stdout
    assert host.changed(check) > 0  # predicted
    assert host.snapshot() == fresh and not host.is_mounted()

    # an earlier version's library (module_utils copied file by file) is replaced by the zip
    stale = host.lib / "ansible_collections" / "ebpf" / "fleet" / "plugins" / "module_utils"
    stale.mkdir(parents=True)
    (stale / "libbpf.py").write_text("# an earlier version\n")
    first = host.play(bpf_host_install_packages=True)
    assert first.returncode == 0, first.stdout
    assert host.changed(first) > 0
    # the packages are this machine's (the lab host shares its file system): present, so ok, not changed; apt
    # ran from the lab's virtualenv interpreter by respawning under the system Python that has python3-apt
    packages = re.search(r"TASK \[ebpf\.fleet\.bpf_host : Install the packages[^\n]*\n(\w+): \[lab1\]", first.stdout)
    assert packages and packages.group(1) == "ok", first.stdout
    assert host.is_mounted()
    assert host.fstab.read_text() == FSTAB + "bpf %s bpf defaults 0 0\n" % host.mount
    settings = host_units.read_environment_file(str(host.default_file))
    assert settings == {
        "EBPF_FLEET_STATE_DIR": str(host.state_dir),
        "EBPF_FLEET_TEXTFILE_DIR": str(host.metrics),
        "EBPF_FLEET_LIB": str(host.lib),
        "EBPF_FLEET_PYTHON": "/usr/bin/python3",
        "EBPF_FLEET_PIN_ROOT": host.pin_root,
    }
    assert os.stat(host.command).st_mode & 0o777 == 0o755
    wrapper = host.command.read_text()
    assert 'EBPF_FLEET_LIB="${EBPF_FLEET_LIB:-%s}"' % host.lib in wrapper
    assert 'EBPF_FLEET_STATE_DIR="${EBPF_FLEET_STATE_DIR:-%s}"' % host.state_dir in wrapper
    # the library: one zip of the collection's module_utils, the old file-by-file copy removed
    source = os.path.join(paths.REPO, "plugins", "module_utils")
    shipped = sorted(os.path.relpath(os.path.join(top, p), source) for top, _dirs, files in os.walk(source) for p in files if p.endswith(".py"))
    assert "kernel/libbpf.py" in shipped and "errors.py" in shipped
    prefix = "ansible_collections/ebpf/fleet/plugins/module_utils/"
    with zipfile.ZipFile(host.lib / "module_utils.zip") as bundle:
        packed = sorted(name[len(prefix) :] for name in bundle.namelist() if name.startswith(prefix) and name.endswith(".py"))
    assert packed == shipped
    assert not (host.lib / "ansible_collections" / "ebpf" / "fleet" / "plugins" / "module_utils").exists()
    restore = (host.unit_dir / UNITS[0]).read_text()
    assert "ExecStart=%s restore\n" % host.command in restore
    assert "EnvironmentFile=-%s\n" % host.default_file in restore
    mount_unit = str(host.mount).strip("/").replace("-", "\\x2d").replace("/", "-") + ".mount"
    assert "After=%s local-fs.target network.target\n" % mount_unit in restore
    assert "Before=network-online.target\n" in restore
    metrics = (host.unit_dir / UNITS[1]).read_text()
    assert "ExecStart=%s metrics\n" % host.command in metrics
    assert "Environment=EBPF_FLEET_TEXTFILE_DIR=%s\n" % host.metrics in metrics
    assert (host.unit_dir / UNITS[2]).read_text() == open(os.path.join(paths.REPO, "extras", "host", "systemd", UNITS[2]), encoding="utf-8").read()
    assert os.stat(host.state_dir).st_mode & 0o777 == 0o700 and host.metrics.is_dir()
    # no systemd here: the units are installed, not enabled, and the output says so
    assert "systemd does not run this host" in first.stdout and "neither enabled nor started" in first.stdout

    set_up = host.snapshot()
    second = host.play(bpf_host_install_packages=True)
    assert second.returncode == 0 and host.changed(second) == 0, second.stdout
    check = host.play(check=True, bpf_host_install_packages=True)
    assert check.returncode == 0 and host.changed(check) == 0, check.stdout
    assert host.snapshot() == set_up

    check = host.play(check=True, bpf_host_state="absent")
    assert check.returncode == 0 and host.changed(check) > 0, check.stdout
    assert host.snapshot() == set_up

    gone = host.play(bpf_host_state="absent")
    assert gone.returncode == 0, gone.stdout
    assert host.snapshot() == fresh  # the fstab file as it was, every file and folder gone
    assert host.is_mounted()  # never unmounted: other programs' pins live there
    again = host.play(bpf_host_state="absent")
    assert again.returncode == 0 and host.changed(again) == 0, again.stdout


def xdp_of(netns, ifname) -> dict:
    return json.loads(netns.ip("-j", "-d", "link", "show", ifname).stdout)[0].get("xdp") or {}


def test_the_installed_units_restore_and_write_metrics_and_absent_is_refused_while_a_deployment_is_recorded(host, run_module):
    """After a deployment exists and a reboot wiped pins and attachments, each installed unit's ExecStart (read
    from the installed file, its environment from its Environment= and EnvironmentFile= lines: the role's
    /etc/default file) brings the program back and writes metrics that Prometheus's parser reads."""
    assert host.play(bpf_host_metrics_interval=60).returncode == 0
    timer = open(os.path.join(paths.REPO, "extras", "host", "systemd", UNITS[2]), encoding="utf-8").read()
    assert "OnUnitActiveSec=15s\n" in timer
    assert (host.unit_dir / UNITS[2]).read_text() == timer.replace("OnUnitActiveSec=15s\n", "OnUnitActiveSec=60s\n")
    host.ns.veth("va", "vb")
    deployment = {
        "name": "counter",
        "object": paths.bpf_object("xdp_count"),
        "interfaces": ["vb"],
        "mode": "native",
        "pin_root": host.pin_root,
        "state_dir": str(host.state_dir),
    }
    try:
        result = run_module("xdp_program", deployment, netns=host.ns)
        assert not result.failed, result.get("msg")
        # what a reboot wipes: the pins (the program leaves the interface with them); the records stay
        for entry in os.listdir(host.pin_root):
            shutil.rmtree(os.path.join(host.pin_root, entry))
        if xdp_of(host.ns, "vb"):
            host.ns.ip("link", "set", "dev", "vb", "xdp", "off")
        assert not xdp_of(host.ns, "vb")

        restore_unit = str(host.unit_dir / "ebpf-fleet-restore.service")
        assert host_units.exec_start(restore_unit) == [str(host.command), "restore"]
        restored = host_units.run_unit(restore_unit, host.ns)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert restored.stdout.startswith("counter: restored"), restored.stdout
        assert xdp_of(host.ns, "vb")["mode"] == 1  # native, as recorded

        metrics_unit = str(host.unit_dir / "ebpf-fleet-metrics.service")
        written = host_units.run_unit(metrics_unit, host.ns)
        assert written.returncode == 0, written.stdout + written.stderr
        pytest.importorskip("prometheus_client.parser")
        series = host_units.parse_metrics(host.metrics / "ebpf_fleet.prom")
        assert series[("ebpf_fleet_in_sync", (("deployment", "counter"), ("hook", "xdp"), ("interface", "vb")))] == 1

        refused = host.play(bpf_host_state="absent")
        assert refused.returncode != 0
        assert ("bpf_host on lab1: bpf_host_state=absent refused: 1 deployment(s) recorded in %s (counter)" % host.state_dir) in refused.stdout, refused.stdout
        assert os.path.exists(restore_unit) and os.path.exists(host.command)

        forced = host.play(bpf_host_state="absent", bpf_host_force=True)
        assert forced.returncode == 0, forced.stdout
        assert not os.path.exists(restore_unit) and not os.path.exists(host.command) and not host.lib.exists()
        assert not host.default_file.exists() and not host.metrics.exists()
        assert (host.state_dir / "counter" / "deployment.json").is_file()  # the records stay
        assert host.fstab.read_text() == FSTAB
    finally:
        run_module("xdp_program", dict(deployment, state="absent"), netns=host.ns)


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"bpf_host_xdp_interfaces": ["nope0"]}, "bpf_host on lab1: interfaces: 'nope0' not found in this network namespace; expected names of existing"),
        (
            {"bpf_host_xdp_interfaces": ["br0"], "bpf_host_xdp_require": "native"},
            "bpf_host on lab1: require=native not met: br0: native XDP is required but native is no (",
        ),
        ({"bpf_host_tc_interfaces": ["br0", "nope1"]}, "bpf_host on lab1: bpf_host_tc_interfaces: nope1 not found"),
    ],
)
def test_an_interface_that_cannot_be_used_fails_naming_host_interface_and_reason_before_any_change(host, variables, message):
    host.ns.bridge("br0")
    fresh = host.snapshot()
    proc = host.play(**variables)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout
    assert host.snapshot() == fresh and not host.is_mounted()


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"bpf_host_install_packages": "maybe"}, "argument 'bpf_host_install_packages' is of type str"),
        ({"bpf_host_xdp_interfaces": {"eth1": 1}}, "argument 'bpf_host_xdp_interfaces' is of type dict"),
        ({"bpf_host_state": "gone"}, "value of bpf_host_state must be one of: present, absent, got: gone"),
        ({"bpf_host_fstab_file": "etc/fstab"}, 'bpf_host_fstab_file "etc/fstab": expected an absolute path'),
        ({"bpf_host_lib_dir": "/usr/local/../lib"}, 'bpf_host_lib_dir "/usr/local/../lib": expected an absolute path'),
        ({"bpf_host_metrics_interval": 0}, "bpf_host_metrics_interval 0: expected a number of seconds, at least 1"),
    ],
)
def test_wrong_variables_fail_with_the_argument_spec_or_a_named_message_before_any_change(host, variables, message):
    fresh = host.snapshot()
    proc = host.play(**variables)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout
    if not {"bpf_host_fstab_file", "bpf_host_lib_dir", "bpf_host_metrics_interval"} & set(variables):
        assert "Validation of arguments failed" in proc.stdout
    assert host.snapshot() == fresh and not host.is_mounted()


def test_an_fstab_line_and_a_mount_found_there_are_used_and_left_by_absent(host):
    theirs = FSTAB + "bpf %s bpf rw,nosuid 0 0\n" % host.mount
    host.fstab.write_text(theirs)
    subprocess.run(["mount", "-t", "bpf", "bpf", str(host.mount)], check=True)
    first = host.play()
    assert first.returncode == 0, first.stdout
    assert host.fstab.read_text() == theirs
    assert "# record: fstab" not in host.default_file.read_text()
    gone = host.play(bpf_host_state="absent")
    assert gone.returncode == 0, gone.stdout
    assert host.fstab.read_text() == theirs and host.is_mounted()
