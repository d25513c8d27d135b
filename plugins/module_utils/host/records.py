# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records of deployments on the host, from which a host can restore itself.

    <state_dir>/<name>/deployment.json   options, object checksum, versions, timestamps
    <state_dir>/<name>/object.o          the object that is loaded
    <state_dir>/<name>/object.o.sha256   its checksum (sha256sum format)
    <state_dir>/<name>/source.c          instead of object.o for a bcc deployment (its checksum covers
                                         the source, the cflags, the function and the hook)
    <state_dir>/<name>/maps/<map>.entries the contents declared through bpf_map (map_records.py)
    <state_dir>/.hooks/<hook>@<if>.json  the order of one hook's chain (bpffs holds only pins,
                                         so the chain's description lives here)

Runs on one host are serialised by an exclusive flock on <state_dir> itself (no lock file): a run
that writes nothing (check mode, removing what was never deployed) creates no folder.

Every file is written to a temporary name and renamed, so a reader sees the
old record or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time

from ansible_collections.ebpf.fleet.plugins.module_utils import shared_options
from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError

STATE_DIR_DEFAULT = shared_options.STATE_DIR_DEFAULT
RECORD_FILE = "deployment.json"
OBJECT_FILE = "object.o"
RECORD_VERSION = 1
KEEP_VERSIONS = 10


class RecordError(FleetError, ValueError):
    """A record under state_dir that cannot be read."""


def _atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_file(path: str, data: bytes) -> None:
    """Write bytes atomically (a temporary name, then rename), mode 0600, creating the folder 0700."""
    _atomic_write(path, data)


def write_json(path: str, data: dict) -> None:
    _atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise RecordError(
            "record %s is not valid JSON (%s): expected a record written by ebpf.fleet; restore it or remove its folder to forget the deployment" % (path, exc),
            field="state_dir",
            value=os.path.dirname(path),
        )


def deployment_dir(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, name)


def object_path(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, name, OBJECT_FILE)


def read_deployment(state_dir: str, name: str):
    return read_json(os.path.join(state_dir, name, RECORD_FILE))


def list_deployments(state_dir: str) -> list:
    if not os.path.isdir(state_dir):
        return []
    return sorted(entry for entry in os.listdir(state_dir) if not entry.startswith(".") and os.path.isfile(os.path.join(state_dir, entry, RECORD_FILE)))


# options kept in a record that decide nothing on the host when the source was compiled on the controller:
# where the controller found the source and its headers (the object's checksum covers what they produced)
CONTROLLER_PATHS = ("source", "source_sha256", "include_dirs")


def changed_fields(old, record: dict, sha256: str) -> list:
    """The recorded options of record that differ from the old record (object checksum included)."""
    if not old:
        return sorted(record) + ["object_sha256"]
    skip = CONTROLLER_PATHS if record.get("compiler") in ("controller", None) else ()
    fields = [key for key in sorted(record) if key not in skip and old.get(key) != record[key]]
    if old.get("object_sha256") != sha256:
        fields.append("object_sha256")
    return fields


def write_deployment(state_dir: str, name: str, record: dict, object_src: str, sha256: str, object_file: str = OBJECT_FILE) -> dict:
    """Copy the object (when it changed) and write the record; returns the record written.

    object_file names the copy: object.o for an ELF object, source.c for a bcc deployment's source."""
    folder = deployment_dir(state_dir, name)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    dest = os.path.join(folder, object_file)
    if os.path.abspath(object_src) != os.path.abspath(dest):
        tmp = dest + ".tmp%d" % os.getpid()
        shutil.copyfile(object_src, tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, dest)
    _atomic_write(dest + ".sha256", ("%s  %s\n" % (sha256, object_file)).encode())
    old = read_deployment(state_dir, name) or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = dict(record)
    record["record_version"] = RECORD_VERSION
    record["name"] = name
    record["object_sha256"] = sha256
    record["object"] = dest
    record["created"] = old.get("created", now)
    record["updated"] = now
    versions = list(old.get("versions", []))
    version = old.get("version") or len(versions)
    if not versions or versions[-1].get("sha256") != sha256:
        version += 1
        versions.append({"version": version, "sha256": sha256, "deployed": now})
    record["versions"] = versions[-KEEP_VERSIONS:]
    record["version"] = version
    write_json(os.path.join(folder, RECORD_FILE), record)
    return record


def remove_deployment(state_dir: str, name: str) -> bool:
    folder = deployment_dir(state_dir, name)
    if not os.path.isdir(folder):
        return False
    shutil.rmtree(folder)
    return True


def hook_record_path(state_dir: str, hook_id: str) -> str:
    return os.path.join(state_dir, ".hooks", hook_id + ".json")


def read_hook(state_dir: str, hook_id: str):
    return read_json(hook_record_path(state_dir, hook_id))


def write_hook(state_dir: str, hook_id: str, data: dict) -> None:
    write_json(hook_record_path(state_dir, hook_id), data)


def remove_hook(state_dir: str, hook_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(hook_record_path(state_dir, hook_id))


def list_hooks(state_dir: str) -> list:
    folder = os.path.join(state_dir, ".hooks")
    if not os.path.isdir(folder):
        return []
    return sorted(entry[:-5] for entry in os.listdir(folder) if entry.endswith(".json") and not entry.startswith("."))


# the armed commit-confirmed checkpoint (checkpoint.py), and the file whose mtime is its change's last step
CHECKPOINT_DIR = ".checkpoint"
CHECKPOINT_ACTIVITY = "activity"


@contextlib.contextmanager
def locked(state_dir: str, create: bool = True, activity: bool = True):
    """An exclusive lock on the host's state (one run changes hooks at a time): flock on the folder.

    With create=False a missing state_dir is not created: there are no records to protect, and the run
    proceeds unlocked (check mode, state=absent). With activity, the end of the run starts (again) the confirm
    window of an armed checkpoint (checkpoint.py): a change is confirmed within the window after its last step.
    The checkpoint's own operations pass activity=False. The first such run of an armed change starts the
    checkpoint's watchdog as it takes the lock, before it changes anything: a watchdog that cannot start fails the
    run there (never after the module reported its result), and a step longer than the window is safe, since the
    watchdog takes this lock before it reverts and the end of the run moves the window."""
    if create:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        if create:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if activity and os.path.isdir(os.path.join(state_dir, CHECKPOINT_DIR)):
            # imported here: checkpoint builds on this module
            from ansible_collections.ebpf.fleet.plugins.module_utils.host import checkpoint  # pylint: disable=import-outside-toplevel

            checkpoint.start_watchdog(state_dir)
        yield
    finally:
        if activity:
            _mark_activity(state_dir)
        os.close(fd)


def _activity_path(state_dir: str) -> str:
    return os.path.join(state_dir, CHECKPOINT_DIR, CHECKPOINT_ACTIVITY)


def note_contact(state_dir: str) -> None:
    """A read-only run (bpf_info) reached the host while an armed change is under way: the controller is still
    working on it, so its confirm window starts again, as after a step. Only a change that took its first step is
    moved (the activity file exists); this never confirms anything: the confirm still needs a fresh connection."""
    with contextlib.suppress(OSError):
        os.utime(_activity_path(state_dir))


def _mark_activity(state_dir: str) -> None:
    """A run that held the lock ended: while a checkpoint is armed, its change moved (checkpoint.py)."""
    path = _activity_path(state_dir)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.utime(path)
    except OSError:
        return  # no checkpoint folder: nothing is armed
