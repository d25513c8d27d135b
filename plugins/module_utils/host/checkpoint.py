# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Commit-confirmed changes: a checkpoint of the host's deployments, a watchdog that reverts to it unless the
controller confirms in time, and the per-deployment history that rollback returns to.

    <state_dir>/.checkpoint/pending.json   the armed checkpoint: token, state (armed|confirmed), armed_at,
                                           timeout, the watchdog's pid or systemd unit
    <state_dir>/.checkpoint/activity       its mtime is the end of the change's last step: records.locked
                                           touches it when a module run ends (absent: not started yet)
    <state_dir>/.checkpoint/snapshot/      the deployments' records as they were when armed (hard links:
                                           records are only ever replaced by rename, never written in place)
    <state_dir>/.checkpoint/lib.zip        the code the watchdog runs (the arming module's own payload)
    <state_dir>/.reverted.json             what the watchdog's last revert did and why, until the next arm
    <state_dir>/.history/<name>/<seq>/     a deployment's earlier records (or a file "absent": it was not
                                           deployed), pushed by each committed change that altered it

The watchdog starts when the change takes its first step (the first module run under the records lock after
the arm: records.locked calls start_watchdog) so that a controller that dies before changing anything leaves
no process behind. It (``python -m ...checkpoint watch``) sleeps until ``mtime(activity) + timeout``, takes the
records lock (so a module still writing finishes first), and unless the checkpoint was confirmed meanwhile puts
the snapshot back: deployments made since are removed, the others get their records back and are restored
(program, chain position, mode, declared map contents) by host/restore.py, the boot-time code path. It runs as a
transient systemd unit where systemd is PID 1, else as a detached process in its own session; either way it
exits as soon as the checkpoint is confirmed, reverted or replaced, and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records, restore
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import deploy

FOLDER = records.CHECKPOINT_DIR
PENDING = "pending.json"
ACTIVITY = records.CHECKPOINT_ACTIVITY
SNAPSHOT = "snapshot"
LIB = "lib.zip"
STARTED = "watching"
# a slow host takes seconds to start Python from the module's zip (an emulated VM under load once took over 30 s);
# a watchdog that died ends the wait at once, so only a slow start waits this long
START_WAIT = 90.0
REVERTED = ".reverted.json"
HISTORY = ".history"
ABSENT = "absent"
KEEP_HISTORY = records.KEEP_VERSIONS
TIMEOUT_DEFAULT = 60
STOP_WAIT = 2.0
UNIT_PREFIX = "ebpf-fleet-checkpoint-"


class CheckpointError(FleetError, RuntimeError):
    """A checkpoint that cannot be armed, confirmed, reverted or rolled back."""


def folder(state_dir: str) -> str:
    return os.path.join(state_dir, FOLDER)


def pending_path(state_dir: str) -> str:
    return os.path.join(state_dir, FOLDER, PENDING)


def read_pending(state_dir: str):
    try:
        return records.read_json(pending_path(state_dir))
    except records.RecordError:
        return None


def read_reverted(state_dir: str):
    try:
        return records.read_json(os.path.join(state_dir, REVERTED))
    except records.RecordError:
        return None


def last_change(state_dir: str):
    """When the checkpoint's change last moved (the end of the last module run under the records lock since the
    arm), or None while it has not started."""
    try:
        return os.stat(os.path.join(state_dir, FOLDER, ACTIVITY)).st_mtime
    except FileNotFoundError:
        return None


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


# ---------------------------------------------------------------- snapshots and what differs


def _deployment_files(path: str) -> dict:
    """{relative path: (inode, size)} of a deployment's records folder (its identity, cheap to compare)."""
    out = {}
    for top, _dirs, files in os.walk(path):
        for name in files:
            if name.startswith("."):
                continue  # a temporary file of a write in progress
            full = os.path.join(top, name)
            st = os.stat(full)
            out[os.path.relpath(full, path)] = (st.st_ino, st.st_size)
    return out


def _link_tree(src: str, dest: str) -> None:
    shutil.copytree(src, dest, copy_function=os.link, ignore=shutil.ignore_patterns(".*"))


def take_snapshot(state_dir: str, dest: str) -> list:
    """Hard-link every deployment's records into dest; the names snapshotted."""
    os.makedirs(dest, mode=0o700)
    names = records.list_deployments(state_dir)
    for name in names:
        _link_tree(records.deployment_dir(state_dir, name), os.path.join(dest, name))
    return names


def changed_names(state_dir: str, snapshot: str) -> list:
    """The deployments whose records differ from the snapshot's (made, removed or rewritten since)."""
    before = set(records.list_deployments(snapshot))
    after = set(records.list_deployments(state_dir))
    out = sorted(before ^ after)
    for name in sorted(before & after):
        if _deployment_files(os.path.join(snapshot, name)) != _deployment_files(records.deployment_dir(state_dir, name)):
            out.append(name)
    return sorted(out)


# ---------------------------------------------------------------- putting records back


def remove_deployment(state_dir: str, name: str) -> None:
    """Detach a deployment, rebuild the chains it shared, remove its pins and records (state=absent)."""
    rec = records.read_deployment(state_dir, name) or {}
    if rec.get("hook") in ("xdp", "tc_ingress", "tc_egress"):
        req = dataclasses.replace(restore.request_of(state_dir, name, rec), state="absent")
        plans = deploy.plan(req, None)
        if any(hp.action != "none" for hp in plans):
            deploy.apply(req, None, plans, {})
        deploy.remove_pins(req)
    records.remove_deployment(state_dir, name)


def _put_back(state_dir: str, source: str, name: str) -> None:
    """Replace a deployment's records folder by source's copy (hard links; a rename makes it visible)."""
    dest = records.deployment_dir(state_dir, name)
    tmp = os.path.join(state_dir, ".%s.back%d" % (name, os.getpid()))
    old = os.path.join(state_dir, ".%s.old%d" % (name, os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(source, tmp)
    if os.path.isdir(dest):
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def bring_back(state_dir: str, source_of: dict) -> dict:
    """Return deployments to earlier records: {name: folder of records, or None for not deployed}.

    Runs under the records lock. Deployments to remove go first (they free chain slots), then the others are
    restored in name order; {name: {"status": removed|restored|unchanged|failed, ...}}."""
    out = {}
    for name in sorted(n for n, src in source_of.items() if src is None):
        if records.read_deployment(state_dir, name) is None and not os.path.isdir(records.deployment_dir(state_dir, name)):
            continue
        try:
            remove_deployment(state_dir, name)
            out[name] = {"status": "removed"}
        except Exception as exc:  # pylint: disable=broad-except  # reported, the others still brought back
            out[name] = {"status": "failed", "error": restore.failure(exc)}
    for name in sorted(n for n, src in source_of.items() if src is not None):
        try:
            if _deployment_files(source_of[name]) != _deployment_files(records.deployment_dir(state_dir, name)):
                _put_back(state_dir, source_of[name], name)
            res = restore.restore_one(state_dir, name, replace_maps=True)
            rec = records.read_deployment(state_dir, name) or {}
            out[name] = {
                "status": res["status"],
                "version": rec.get("version"),
                "object_sha256": rec.get("object_sha256"),
                "hooks": res["hooks"],
                "maps": res["maps"],
            }
        except Exception as exc:  # pylint: disable=broad-except
            out[name] = {"status": "failed", "error": restore.failure(exc)}
    return out


# ---------------------------------------------------------------- the watchdog


def _own_library() -> str:
    """The zip (a module's payload) or folder this code runs from, for the watchdog's PYTHONPATH."""
    path = os.path.dirname(os.path.abspath(__file__))
    while path and path != os.path.dirname(path):
        if os.path.isfile(path):
            return path  # .../payload.zip/ansible_collections/... : the zip
        if os.path.basename(path) == "ansible_collections":
            return os.path.dirname(path)
        path = os.path.dirname(path)
    raise CheckpointError("cannot find the collection's code under %s for the revert watchdog" % __file__)


def _has_systemd() -> bool:
    return os.path.isdir("/run/systemd/system") and shutil.which("systemd-run") is not None


# The watchdog puts its library on sys.path once Python has started (-I: no PYTHONPATH, no user site), then runs
# this module. On PYTHONPATH, a module's AnsiballZ payload zip (the library an arm copies) would have its
# sitecustomize.py imported at startup: ansible-core's wrapper writes one there that is not meant to run again.
_WATCHDOG_BOOT = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
_WATCHDOG_MODULE = "ansible_collections.ebpf.fleet.plugins.module_utils.host.checkpoint"


def _launch(state_dir: str, token: str, pythonpath: str) -> dict:
    cmd = [sys.executable, "-I", "-c", _WATCHDOG_BOOT, pythonpath, _WATCHDOG_MODULE, "watch", "--state-dir", state_dir, "--token", token]
    if _has_systemd():
        unit = UNIT_PREFIX + token
        proc = subprocess.run(
            ["systemd-run", "--unit", unit, "--collect", "--quiet", "--service-type=exec", "--"] + cmd,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise CheckpointError("systemd-run could not start the revert watchdog %s: %s" % (unit, proc.stderr.strip() or proc.returncode))
        return {"launcher": "systemd", "unit": unit}
    log = open(os.path.join(folder(state_dir), "watch.log"), "ab")  # pylint: disable=consider-using-with
    try:
        # its own session: the SSH session that armed it ends without taking it along
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", close_fds=True, start_new_session=True
        )
    finally:
        log.close()
    return {"launcher": "process", "pid": proc.pid}


def start_watchdog(state_dir: str) -> None:
    """The change takes its first step (records.locked, as a module run takes the lock): start the armed
    checkpoint's watchdog unless it runs. The caller holds the records lock."""
    pending = read_pending(state_dir)
    if not pending or pending.get("state") != "armed" or pending.get("launcher"):
        return
    try:
        pending.update(_launch(state_dir, pending["token"], pending["lib"]))
        _wait_started(state_dir, pending)
    except BaseException:
        _stop_watchdog(pending)
        raise
    records.write_json(pending_path(state_dir), pending)


def _wait_started(state_dir: str, pending: dict) -> None:
    """A watchdog that cannot run must fail the arm, not leave a change unguarded."""
    marker = os.path.join(folder(state_dir), STARTED)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if os.path.isfile(marker):
            return
        if not watchdog_alive(pending) and time.monotonic() > deadline - START_WAIT + 1:
            break
        time.sleep(0.05)
    log = ""
    if pending.get("launcher") == "systemd":  # its output went to the journal
        with contextlib.suppress(OSError):
            log = (
                subprocess.run(
                    ["journalctl", "--unit", pending.get("unit", ""), "--lines", "20", "--no-pager", "--output", "cat"],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=10,
                )
                .stdout[-600:]
                .strip()
            )
    with contextlib.suppress(OSError):
        with open(os.path.join(folder(state_dir), "watch.log"), "rb") as handle:
            log = log or handle.read()[-600:].decode("utf-8", "replace").strip()
    raise CheckpointError(
        "the revert watchdog (%s) did not start within %ds, so the change is not armed: %s"
        % (pending.get("unit") or "pid %s" % pending.get("pid"), START_WAIT, log or "no output")
    )


def watchdog_alive(pending: dict) -> bool:
    if pending.get("launcher") == "systemd":
        proc = subprocess.run(["systemctl", "is-active", "--quiet", pending.get("unit", "")], check=False)
        return proc.returncode == 0
    pid = pending.get("pid")
    if not pid:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return pending.get("token", "").encode() in handle.read()
    except OSError:
        return False


def _stop_watchdog(pending: dict) -> None:
    """The watchdog exits by itself once the checkpoint is not armed any more; wait for it, then make sure."""
    deadline = time.monotonic() + STOP_WAIT
    while watchdog_alive(pending) and time.monotonic() < deadline:
        time.sleep(0.1)
    if watchdog_alive(pending):
        if pending.get("launcher") == "systemd":
            subprocess.run(["systemctl", "stop", pending["unit"]], check=False, capture_output=True)
        else:
            with contextlib.suppress(OSError):
                os.kill(pending["pid"], signal.SIGKILL)


def _due(state_dir: str, pending: dict) -> float:
    """When the watchdog acts: the window after the change's last step."""
    moved = last_change(state_dir) or float(pending.get("armed_at", 0))
    return moved + float(pending.get("timeout", TIMEOUT_DEFAULT))


def watch(state_dir: str, token: str, poll: float = 0.5) -> int:
    """The watchdog's loop: revert the checkpoint `token` when it was not confirmed in time."""
    with contextlib.suppress(OSError):
        records.write_file(os.path.join(folder(state_dir), STARTED), token.encode())
    while True:
        pending = read_pending(state_dir)
        if not pending or pending.get("token") != token or pending.get("state") != "armed":
            return 0
        due = _due(state_dir, pending)
        if time.time() < due:
            time.sleep(min(poll, max(0.05, due - time.time())))
            continue
        with records.locked(state_dir, create=False, activity=False):
            pending = read_pending(state_dir)
            if not pending or pending.get("token") != token or pending.get("state") != "armed":
                return 0
            if time.time() < _due(state_dir, pending):
                continue  # a module ran while we waited for the lock: the window starts again
            revert(
                state_dir,
                "not confirmed within %ss of the last change at %s: the controller did not reach "
                "the host again over a fresh connection" % (pending.get("timeout"), _stamp(last_change(state_dir))),
                pending=pending,
                watchdog=True,
            )
            return 0


# ---------------------------------------------------------------- the operations (callers hold the records lock)


def arm(state_dir: str, timeout: int, reason: str = "") -> dict:
    """Take a checkpoint of every deployment; returns the pending record. The watchdog starts with the change:
    when the first module run takes the records lock (start_watchdog). Until then nothing changed, nothing
    can cut the controller off, and a controller that dies leaves no process behind.

    A checkpoint left armed by an earlier run (its controller died) is reverted first; one left confirmed (the
    controller died during the health gates) is committed first."""
    earlier = {}
    pending = read_pending(state_dir)
    if pending and pending.get("state") == "armed":
        earlier = {
            "reverted": revert(
                state_dir,
                "a new run armed a checkpoint before the change armed at %s was confirmed" % _stamp(float(pending.get("armed_at", 0))),
                pending=pending,
            )
        }
    elif pending:
        earlier = {"committed": commit(state_dir, pending)}
    elif os.path.isdir(folder(state_dir)):
        shutil.rmtree(folder(state_dir))  # the remains of an arm that died half way
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, REVERTED))
    token = uuid.uuid4().hex[:16]
    os.makedirs(folder(state_dir), mode=0o700)
    names = take_snapshot(state_dir, os.path.join(folder(state_dir), SNAPSHOT))
    lib = _own_library()
    if os.path.isfile(lib):
        shutil.copyfile(lib, os.path.join(folder(state_dir), LIB))
        lib = os.path.join(folder(state_dir), LIB)
    now = time.time()
    pending = {
        "token": token,
        "state": "armed",
        "armed_at": now,
        "armed": _stamp(now),
        "timeout": int(timeout),
        "reason": reason,
        "deployments": names,
        "lib": lib,
        "launcher": None,
        "pid": None,
    }
    records.write_json(pending_path(state_dir), pending)
    return dict(pending, earlier=earlier)


def revert(state_dir: str, reason: str, pending: dict = None, watchdog: bool = False) -> dict:
    """Put the checkpoint back, disarm it, and write .reverted.json; the report."""
    pending = pending or read_pending(state_dir)
    if not pending:
        raise CheckpointError("no checkpoint is armed on this host (%s): nothing to revert to" % folder(state_dir))
    snapshot = os.path.join(folder(state_dir), SNAPSHOT)
    if not os.path.isdir(snapshot):
        raise CheckpointError(
            "the checkpoint %s has no snapshot folder %s: it cannot be reverted; restore the host by hand (docs/rollouts.md)" % (pending.get("token"), snapshot)
        )
    wanted = {name: None for name in records.list_deployments(state_dir)}
    wanted.update({name: os.path.join(snapshot, name) for name in records.list_deployments(snapshot)})
    results = bring_back(state_dir, wanted)
    now = time.time()
    report = {
        "token": pending.get("token"),
        "reason": reason,
        "reverted_at": now,
        "reverted": _stamp(now),
        "armed_at": pending.get("armed_at"),
        "last_change": last_change(state_dir),
        "by": "watchdog" if watchdog else "request",
        "deployments": results,
        "failed": sorted(name for name, res in results.items() if res["status"] == "failed"),
    }
    if watchdog:
        # for the controller that comes back: its confirm fails with this (a requested revert answers at once)
        records.write_json(os.path.join(state_dir, REVERTED), report)
    _disarm(state_dir, pending, watchdog)
    return report


def _disarm(state_dir: str, pending: dict, watchdog: bool = False) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pending_path(state_dir))  # the watchdog sees it gone and exits
    if not watchdog:
        _stop_watchdog(pending)
    shutil.rmtree(folder(state_dir), ignore_errors=True)


def confirm(state_dir: str, token: str) -> dict:
    """The controller reached the host again: stop the watchdog, keep the checkpoint (for a gate's revert)."""
    pending = _expect(state_dir, token)
    if pending.get("state") == "armed":
        pending["state"] = "confirmed"
        pending["confirmed"] = _stamp(time.time())
        records.write_json(pending_path(state_dir), pending)
        _stop_watchdog(pending)
    return pending


def commit(state_dir: str, pending: dict) -> list:
    """Make the change the new state: push the earlier records of what it altered into the history."""
    snapshot = os.path.join(folder(state_dir), SNAPSHOT)
    changed = changed_names(state_dir, snapshot) if os.path.isdir(snapshot) else []
    for name in changed:
        push_history(state_dir, name, os.path.join(snapshot, name) if os.path.isdir(os.path.join(snapshot, name)) else None)
    _disarm(state_dir, pending)
    return changed


def _expect(state_dir: str, token: str) -> dict:
    pending = read_pending(state_dir)
    if pending and pending.get("token") == token:
        return pending
    done = read_reverted(state_dir)
    if done and done.get("token") == token:
        raise Reverted(done)
    raise CheckpointError(
        "no checkpoint %s is armed on this host (%s): %s"
        % (token, folder(state_dir), "another run armed %s since" % pending.get("token") if pending else "it was committed or reverted by another run")
    )


class Reverted(CheckpointError):
    """The checkpoint a controller asks about was reverted."""

    def __init__(self, report: dict):
        self.report = report
        changes = (
            ", ".join(
                "%s %s%s" % (name, res["status"], " v%s" % res["version"] if res.get("version") else "")
                for name, res in sorted(report.get("deployments", {}).items())
            )
            or "nothing to change"
        )
        super().__init__("rolled back at %s: %s; the previous deployments were restored (%s)" % (report.get("reverted"), report.get("reason"), changes))


# ---------------------------------------------------------------- history and rollback


def history_dir(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, HISTORY, name)


def history(state_dir: str, name: str) -> list:
    """The deployment's earlier records, oldest first: [(seq, folder or None for not deployed)]."""
    base = history_dir(state_dir, name)
    if not os.path.isdir(base):
        return []
    out = []
    for entry in sorted((e for e in os.listdir(base) if e.isdigit()), key=int):
        path = os.path.join(base, entry)
        out.append((int(entry), None if os.path.isfile(os.path.join(path, ABSENT)) else path))
    return out


def push_history(state_dir: str, name: str, source) -> None:
    base = history_dir(state_dir, name)
    os.makedirs(base, mode=0o700, exist_ok=True)
    items = history(state_dir, name)
    seq = items[-1][0] + 1 if items else 1
    dest = os.path.join(base, str(seq))
    if source is None:
        os.makedirs(dest, mode=0o700)
        open(os.path.join(dest, ABSENT), "w").close()  # pylint: disable=consider-using-with
    else:
        _link_tree(source, dest)
    for old_seq, _path in items[: max(0, len(items) + 1 - KEEP_HISTORY)]:
        shutil.rmtree(os.path.join(base, str(old_seq)), ignore_errors=True)


def rollback_plan(state_dir: str, names: list = None) -> dict:
    """{name: (seq, folder or None)} the newest history entry of each named (or every) deployment."""
    base = os.path.join(state_dir, HISTORY)
    known = sorted(os.listdir(base)) if os.path.isdir(base) else []
    out = {}
    for name in names if names else known:
        items = history(state_dir, name)
        if items:
            out[name] = items[-1]
    return out


def rollback(state_dir: str, plan: dict) -> dict:
    """Return each deployment of plan to its history entry, and drop that entry."""
    results = bring_back(state_dir, {name: path for name, (_seq, path) in plan.items()})
    for name, (seq, _path) in plan.items():
        if results.get(name, {}).get("status") != "failed":
            shutil.rmtree(os.path.join(history_dir(state_dir, name), str(seq)), ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(history_dir(state_dir, name))
    return results


# ---------------------------------------------------------------- the watchdog's command line


def main(argv: list = None) -> int:
    parser = argparse.ArgumentParser(prog="ebpf-fleet-checkpoint")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("watch", help="revert the checkpoint TOKEN unless it is confirmed in time")
    run.add_argument("--state-dir", required=True)
    run.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    return watch(args.state_dir, args.token)


if __name__ == "__main__":
    raise SystemExit(main())
