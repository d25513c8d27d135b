# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's fingerprint: whether it is still in the state the last full run of a declaration left.

deploy_xdp.yml records it (<state_dir>/.fingerprint.json) after a full run that ended well, and checks it first
on the next run: when it matches, that run has nothing to do on the host and skips the roles (one module run
instead of some forty). It matches when all of these hold:

  the controller's digest of the declaration is the recorded one (the playbook computes it: the collection's
    files, the host's role variables, the controller files they name; plugins/filter/declaration_digest.py);
  no checkpoint is pending (a change was neither confirmed nor reverted);
  the deployment records are byte for byte the recorded ones (a rollback, a revert, a restore at boot or
    another play rewrote them otherwise);
  the files the roles installed have the recorded checksums, and the units they enabled are enabled and active
    (where systemd runs the host);
  the kernel holds what the records say, every deployment in sync (drift.py: the programs on their hooks, in
    order and mode, and the declared map contents).

Anything else (a missing or unreadable fingerprint included) means "run the roles", which repair it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

from ansible_collections.ebpf.fleet.plugins.module_utils.host import drift, records

FILE = ".fingerprint.json"
VERSION = 1
MAX_REASONS = 5
# in the state folder, but not records: the checkpoint's working folder, the history of earlier versions, the
# fingerprint itself and the reverted note (the checkpoint being pending is checked on its own)
_NOT_RECORDS = (records.CHECKPOINT_DIR, ".history", FILE, ".reverted.json")


def path(state_dir: str) -> str:
    return os.path.join(state_dir, FILE)


def records_digest(state_dir: str) -> str:
    """sha256 over the names and bytes of every deployment record, hook record and declared map contents."""
    digest = hashlib.sha256()
    if not os.path.isdir(state_dir):
        return digest.hexdigest()
    for top, dirs, files in os.walk(state_dir):
        rel = os.path.relpath(top, state_dir)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in _NOT_RECORDS]
            files = [f for f in files if f not in _NOT_RECORDS and not f.startswith(".")]
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(top, name)
            digest.update(os.path.join(rel, name).encode() + b"\0")
            with open(full, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()


def file_sha256(name: str):
    """sha256 of the file, or None when it cannot be read."""
    try:
        with open(name, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def _systemd_runs() -> bool:
    return os.path.isdir("/run/systemd/system")


def _units_down(units: list) -> list:
    """The units of the list that are not enabled or not active, each with what systemctl said."""
    out = []
    for verb in ("is-enabled", "is-active"):
        proc = subprocess.run(["systemctl", verb, "--"] + list(units), capture_output=True, text=True, check=False)
        said = proc.stdout.split()
        for index, unit in enumerate(units):
            word = said[index] if index < len(said) else "unknown"
            if word not in ("enabled", "active", "static"):
                out.append("unit %s is %s" % (unit, word))
    return out


def build(state_dir: str, digest: str, files: list, units: list) -> dict:
    """The fingerprint of the host as it is now, for the declaration digest."""
    return {
        "version": VERSION,
        "digest": digest,
        "records": records_digest(state_dir),
        "deployments": records.list_deployments(state_dir),
        "files": {name: file_sha256(name) for name in sorted(set(files))},
        "units": sorted(set(units)),
    }


def read(state_dir: str):
    """The recorded fingerprint, or None (missing, unreadable, another version)."""
    try:
        with open(path(state_dir), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == VERSION else None


def write(state_dir: str, data: dict) -> None:
    records.write_json(path(state_dir), data)


def remove(state_dir: str) -> bool:
    try:
        os.unlink(path(state_dir))
    except FileNotFoundError:
        return False
    return True


def check(state_dir: str, pin_root: str, digest: str, pending) -> list:
    """Why the host is not in the state of the recorded fingerprint for this digest ([] when it is). The cheap
    checks come first; the first kind that fails is the answer (the full run repairs whatever else differs)."""
    rec = read(state_dir)
    if rec is None:
        return ["no fingerprint is recorded in %s (no full run of this version ended well here yet)" % state_dir]
    if rec.get("digest") != digest:
        return ["the declaration changed since the last full run (digest %s, recorded %s)" % (digest[:12], str(rec.get("digest"))[:12])]
    if pending:
        return ["a checkpoint is pending (a change was neither confirmed nor reverted)"]
    if records_digest(state_dir) != rec.get("records"):
        return ["the deployment records in %s changed since the last full run (a rollback, a revert, a restore or another play)" % state_dir]
    reasons = []
    for name, sha256 in sorted((rec.get("files") or {}).items()):
        now = file_sha256(name)
        if now != sha256:
            reasons.append("file %s %s" % (name, "is missing" if now is None else "changed"))
    units = rec.get("units") or []
    if units and _systemd_runs():
        reasons += _units_down(units)
    if reasons:
        return reasons[:MAX_REASONS]
    for name in rec.get("deployments") or []:
        found = drift.check(state_dir, name, pin_root)
        if found["state"] != drift.IN_SYNC:
            reasons += ["%s: %s" % (name, reason) for reason in found["reasons"]]
        if len(reasons) >= MAX_REASONS:
            break
    return reasons[:MAX_REASONS]
