# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of ebpf.fleet.xdp_program: compiles `src` with clang on the controller, copies the object, runs the module."""

from __future__ import annotations

from ansible_collections.ebpf.fleet.plugins.plugin_utils.compile import ProgramAction


class ActionModule(ProgramAction):
    MODULE = "ebpf.fleet.xdp_program"
