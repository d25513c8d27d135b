# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options shared by xdp_program and tc_program (one deployment of one program)."""

    DOCUMENTATION = r"""
options:
  name:
    description:
      - The deployment's name; its pins are under O(pin_root)/O(name) and its record under O(state_dir)/O(name).
      - Letters, digits, V(_) and V(-), at most 64 characters, starting with a letter or digit (bpffs refuses dots
        in pin names). Other names fail the task before anything changes.
    type: str
    required: true
  state:
    description:
      - V(present) loads and attaches the program; V(absent) removes this deployment's programs, pins and
        records, and rebuilds the chains of the other programs on its interfaces atomically.
    type: str
    choices: [present, absent]
    default: present
  interfaces:
    description:
      - Interfaces to attach to. Interfaces the deployment was attached to before and that are not listed any
        more lose it.
      - Names of 1 to 15 letters, digits, V(_) or V(-); a name with a dot (a VLAN such as C(eth0.100)) is refused,
        because the hook's pins carry the interface name and bpffs refuses dots.
    type: list
    elements: str
    default: []
  object:
    description:
      - A compiled BPF ELF object on the host. Exactly one of O(object) and O(src) with O(state=present)
        (with O(compiler=controller) the action plugin sets O(object) to the object it compiled and copied).
    type: path
  src:
    description:
      - A C source file, compiled as O(compiler) says.
      - With O(compiler=controller) the path is on the controller (the action plugin compiles and copies the object).
    type: path
  compiler:
    description:
      - Where O(src) is compiled. V(controller) runs clang on the controller (action plugin; the collection's
        C(bpf/include) is on the include path), V(host) runs clang on the managed host, V(bcc) compiles and loads
        with bcc on the host (O(src) is a path on the host and O(program) names the C function).
      - With V(bcc) the module respawns under the system Python, where bcc lives (Debian C(python3-bpfcc)), and
        needs the running kernel's headers. A bcc program cannot include C(fleet/chain.h), so it runs alone or
        last on an interface; its maps are new at each load, and the entries of the pinned maps of the same
        layout are copied into them before the swap.
    type: str
    choices: [controller, host, bcc]
    default: controller
  program:
    description:
      - The program's function name or section name in the object; may be empty when the object holds one program.
    type: str
    default: ""
  defines:
    description:
      - Preprocessor definitions for O(src) (C(-DKEY=VALUE); a null value gives C(-DKEY)).
    type: dict
    default: {}
  include_dirs:
    description:
      - Include folders for O(src) (C(-I)).
    type: list
    elements: path
    default: []
  priority:
    description:
      - Order among the programs on one hook of an interface; lower runs first (ties by name).
    type: int
    default: 50
  replace_incompatible_maps:
    description:
      - When an upgrade declares a map that differs from the pinned one (type, key or value size, max entries,
        flags), replace it with a new empty map after the swap. Without it the task fails and changes nothing.
      - Compatible maps are always kept, with their contents.
    type: bool
    default: false
notes:
  - The first program of an interface's chain is attached with a bpf_link (or a clsact filter); the others are
    reached by tail calls through a program array (C(fleet/chain.h)). Every change builds a new chain beside the
    running one and swaps it in atomically.
  - Objects that do not include C(fleet/chain.h) can only run alone or last in a chain.
requirements:
  - libbpf 1.x (Debian package libbpf1)
  - pyroute2
  - clang on the controller for O(compiler=controller), on the host for O(compiler=host)
  - bcc for the host's system Python for O(compiler=bcc)
"""
