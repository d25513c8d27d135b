# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: declaration_digest
short_description: A digest of what a host is declared to run, for M(ebpf.fleet.bpf_fingerprint)
version_added: 0.3.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Returns the sha256, in hexadecimal, of the input (the host's declaration, any data, compared as canonical JSON),
    of the files of this collection that decide what its roles do (C(galaxy.yml), C(plugins/), C(roles/), C(bpf/),
    C(extras/), C(playbooks/)) and of the contents of O(files), which are files on the controller that the
    declaration names (rules files, a C source).
  - Two runs get the same digest when nothing of that changed; C(playbooks/deploy_xdp.yml) gives it to
    M(ebpf.fleet.bpf_fingerprint) to skip the roles on hosts whose declaration did not change.
  - Returns an empty string when a file of O(files) is not an absolute path or cannot be read; the playbook then
    runs the roles (never a digest that would hide a change of a file it could not read).
positional: _input
options:
  _input:
    description: The declaration, for example a dict of the host's role variables (their values, templated).
    type: raw
    required: true
  files:
    description: Absolute paths of controller files whose contents belong to the declaration; empty strings are left out.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: The digest of the filter's declaration, with its rules file
  ansible.builtin.set_fact:
    my_digest: >-
      {{ {'rules': xdp_filter_v4_rules, 'verdict': xdp_filter_default_verdict}
         | ebpf.fleet.declaration_digest(files=[xdp_filter_v4_rules_file]) }}
"""

RETURN = r"""
_value:
  description: 64 hexadecimal digits, or an empty string when a file of O(files) could not be read.
  type: str
"""

import hashlib
import json
import os

from ansible.errors import AnsibleFilterError

# the collection's root: plugins/filter/<this file>
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PARTS = ("galaxy.yml", "plugins", "roles", "bpf", "extras", "playbooks")
_collection = []  # the collection's digest, once per process


def collection_digest(root: str = _ROOT) -> str:
    """sha256 over the relative names and bytes of the collection's files that decide what the roles do."""
    if root == _ROOT and _collection:
        return _collection[0]
    digest = hashlib.sha256()
    for part in _PARTS:
        top = os.path.join(root, part)
        walk = [(root, [], [part])] if os.path.isfile(top) else os.walk(top)
        for folder, dirs, names in walk:
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(n for n in names if not n.endswith(".pyc")):
                full = os.path.join(folder, name)
                digest.update(os.path.relpath(full, root).encode() + b"\0")
                with open(full, "rb") as handle:
                    digest.update(handle.read())
                digest.update(b"\0")
    if root == _ROOT:
        _collection.append(digest.hexdigest())
    return digest.hexdigest()


def declaration_digest(data, files=None):
    """data (any JSON-able value), files (absolute controller paths) -> sha256 hex, or '' (a file unreadable)."""
    if files is None:
        files = []
    if not isinstance(files, (list, tuple)):
        raise AnsibleFilterError("files %r: expected a list of absolute paths on the controller" % (files,))
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("input: cannot be written as JSON (%s): expected the declaration's data" % exc) from exc
    digest = hashlib.sha256(b"ebpf.fleet declaration 1\0")
    digest.update(collection_digest().encode() + b"\0" + text.encode() + b"\0")
    for name in sorted({str(f) for f in files if f}):
        if not os.path.isabs(name):
            return ""
        try:
            with open(name, "rb") as handle:
                digest.update(name.encode() + b"\0" + hashlib.sha256(handle.read()).hexdigest().encode() + b"\0")
        except OSError:
            return ""
    return digest.hexdigest()


class FilterModule:
    """ebpf.fleet.declaration_digest"""

    def filters(self):
        return {"declaration_digest": declaration_digest}
