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


class Connection(LocalConnection):
    """The local connection, with every command run inside a named network namespace."""

    transport = "ebpf.fleet.netns"

    def _netns_path(self) -> str:
        name = self.get_option("netns") or self._play_context.remote_addr
        if not name or not NAME_PATTERN.match(name):
            raise AnsibleConnectionFailure(
                "netns=%r is not a network namespace name: expected letters, digits, '_', '.' or '-'" % (name,))
        path = os.path.join(NETNS_DIR, name)
        if not os.path.exists(path):
            raise AnsibleConnectionFailure("network namespace %r does not exist (no %s)" % (name, path))
        return path

    def exec_command(self, cmd, in_data=None, sudoable=True):
        wrapped = "%s --net=%s /bin/sh -c %s" % (
            shlex.quote(self.get_option("nsenter")), shlex.quote(self._netns_path()), shlex.quote(cmd))
        return super().exec_command(wrapped, in_data=in_data, sudoable=sudoable)
