# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a network namespace of the controller
description:
  - Treats a named network namespace on the controller (C(/run/netns/NAME)) as a host, for labs and tests where
    every host of a fleet is a network namespace on one machine.
  - Commands run through C(nsenter --net), which changes only the network namespace, so the bpf filesystem at
    C(/sys/fs/bpf) and the rest of the controller's file system stay visible (C(ip netns exec) would remount
    C(/sys) and hide bpffs).
  - Files are copied locally, as with the C(local) connection.
author: ebpf.fleet developers (@ebpf-fleet)
version_added: 0.1.0
options:
  netns:
    description:
      - Name of the network namespace, as listed by C(ip netns list).
      - Defaults to the host's address (C(ansible_host)), then its inventory name.
    type: str
    vars:
      - name: ansible_netns
      - name: ansible_host
  nsenter:
    description: Path of the nsenter binary.
    type: str
    default: nsenter
    vars:
      - name: ansible_netns_nsenter
extends_documentation_fragment:
  - connection_pipelining
notes:
  - Requires root on the controller (entering a namespace needs CAP_SYS_ADMIN).
"""

EXAMPLES = r"""
# inventory: two lab hosts that are network namespaces on the controller
# [lab]
# lab-a ansible_connection=ebpf.fleet.netns ansible_netns=ebft-lab-a
# lab-b ansible_connection=ebpf.fleet.netns ansible_netns=ebft-lab-b
"""

import os
import re
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection.local import Connection as LocalConnection

NETNS_DIR = "/run/netns"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def netns_path(name) -> str:
    """/run/netns/NAME for a namespace name; refuses names that resolve to something else ('..', '/', links)."""
    expected = "the name of a network namespace in %s (1 to 64 letters, digits, '_', '.' or '-', not '.' or '..', no '/')" % NETNS_DIR
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (".", ".."):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:80]) + "..."
        raise AnsibleConnectionFailure("netns=%s is not a network namespace name: expected %s" % (shown, expected))
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        raise AnsibleConnectionFailure(
            "netns=%r: network namespace %r does not exist (no %s): expected %s, as listed by `ip netns list`" % (name, name, path, expected)
        )
    try:
        resolved = os.path.realpath(path)
    except OSError as exc:
        resolved = "an unreadable target (%s)" % exc.strerror
    if os.path.dirname(resolved) != os.path.realpath(NETNS_DIR):
        raise AnsibleConnectionFailure("netns=%r: %s resolves to %s, outside %s: expected %s" % (name, path, resolved, NETNS_DIR, expected))
    return path


class Connection(LocalConnection):
    """The local connection, with every command run inside a named network namespace."""

    transport = "ebpf.fleet.netns"

    def _netns_path(self) -> str:
        name = self.get_option("netns") or self._play_context.remote_addr
        return netns_path(name)

    def exec_command(self, cmd, in_data=None, sudoable=True):
        wrapped = "%s --net=%s /bin/sh -c %s" % (shlex.quote(self.get_option("nsenter")), shlex.quote(self._netns_path()), shlex.quote(cmd))
        return super().exec_command(wrapped, in_data=in_data, sudoable=sudoable)
