"""Every Python copy of a size or name from bpf/include/fleet/*.h agrees with the header.

The headers are the one source: clang reads every #define (`clang -dM -E`) and compiles every enum into BTF,
which plugins/module_utils/kernel/btf.py reads back. COPIES lists each Python constant that repeats one of them, by
module and name, with how it follows from the header; a copy added later is one more line there. A copy that
is renamed or removed fails here by name, so the line is updated with it.
"""

import ast
import glob
import importlib
import operator
import os
import re
import subprocess

import pytest
from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf

HEADERS = sorted(glob.glob(os.path.join(paths.REPO, "bpf", "include", "fleet", "*.h")))
INCLUDES = ["-I", os.path.join(paths.REPO, "bpf", "include"), "-I", "/usr/include/%s-linux-gnu" % os.uname().machine]
DEFINE = re.compile(r"^#define (FLEET_[A-Z0-9_]+) (.+)$")
ENUM = re.compile(r"\benum\s+([a-z_][a-z0-9_]*)\s*\{")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitAnd: operator.and_,
    ast.USub: operator.neg,
}


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _eval(node, defines):
    """An integer C expression (literals, + - * / << >> | &, other FLEET_ macros)."""
    if isinstance(node, ast.Expression):
        return _eval(node.body, defines)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name) and node.id in defines:
        return c_value(node.id, defines)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left, defines), _eval(node.right, defines))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand, defines))
    raise ValueError("not an integer expression: %s" % ast.dump(node))


def c_value(name, defines):
    """The integer value of a FLEET_ macro, or None when it is not an integer constant (a function-like macro)."""
    text = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", defines[name]).replace("/", "//")
    try:
        return _eval(ast.parse(text, mode="eval"), defines)
    except (SyntaxError, ValueError):
        return None


@pytest.fixture(scope="module")
def header_facts(tmp_path_factory):
    """{"defines": {FLEET_X: value}, "enums": {enum name: {CONSTANT: value}}, "btf": Btf} from the headers."""
    tmp = tmp_path_factory.mktemp("headers")
    # encap.h uses lb.h's FLEET_LB_TTL without including lb.h: it goes last
    order = sorted(HEADERS, key=lambda h: os.path.basename(h) == "encap.h")
    includes = "".join('#include "fleet/%s"\n' % os.path.basename(h) for h in order)
    enums = sorted({name for h in HEADERS for name in ENUM.findall(read(h))})
    source = tmp / "all_headers.c"
    # one global per enum, so that clang puts every enum (and the headers' maps and variables) into the BTF
    source.write_text(
        includes + "".join("enum %s probe_%s;\n" % (e, e) for e in enums) + "char _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n"
    )
    macros = subprocess.run(["clang", "-target", "bpf", "-dM", "-E"] + INCLUDES + [str(source)], capture_output=True, text=True, check=True).stdout
    raw = {m.group(1): m.group(2).strip() for m in map(DEFINE.match, macros.splitlines()) if m}
    defines = {name: c_value(name, raw) for name in raw}
    obj, blob = tmp / "all_headers.o", tmp / "all_headers.btf"
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-c"] + INCLUDES + [str(source), "-o", str(obj)], capture_output=True, text=True, check=True)
    subprocess.run(["llvm-objcopy", "--dump-section", ".BTF=%s" % blob, str(obj), str(tmp / "discard.o")], capture_output=True, text=True, check=True)
    types = btf.Btf.parse(blob.read_bytes())
    found = {}
    for name in enums:
        enum = types.find(name, btf.KIND_ENUM)
        assert enum is not None, "enum %s of the headers is missing from the BTF" % name
        found[name] = {m.name: m.value for m in enum.members}
    return {"defines": defines, "enums": found, "btf": types}


def names(enum: dict, prefix: str, drop=("MAX",)) -> tuple:
    """An enum's constants in value order, as the operator writes them: prefix cut, lower case, MAX left out."""
    return tuple(n[len(prefix) :].lower() for n, _v in sorted(enum.items(), key=lambda kv: kv[1]) if n[len(prefix) :] not in drop)


def has_var(types, name) -> bool:
    return types.find(name, btf.KIND_VAR) is not None


# (module under ansible_collections.ebpf.fleet, constant, what it must equal, from the header facts h)
COPIES = [
    ("plugins.plugin_utils.filter_rules", "ACTIONS", lambda h: names(h["enums"]["fleet_verdict"], "FLEET_VERDICT_")),
    ("plugins.plugin_utils.filter_rules", "RULE_ID_MAX", lambda h: h["defines"]["FLEET_FILTER_RULES_MAX"] - 1),
    ("plugins.plugin_utils.filter_rules", "REDIRECT_SLOT_MAX", lambda h: h["defines"]["FLEET_FILTER_REDIRECT_MAX"] - 1),
    ("plugins.filter.xdp_filter_port_entries", "PROTOS", lambda h: names(h["enums"]["fleet_port_flags"], "FLEET_PORT_")),
    ("plugins.module_utils.dataplane.xdp_filter_tables", "FLAG_MATCH", lambda h: "match" if "FLEET_STRIDE_MATCH" in h["enums"]["fleet_stride_flags"] else None),
    (
        "plugins.module_utils.dataplane.xdp_filter_tables",
        "FLAG_DEEPER",
        lambda h: "deeper" if "FLEET_STRIDE_DEEPER" in h["enums"]["fleet_stride_flags"] else None,
    ),
    ("plugins.module_utils.dataplane.tc_egress_tables", "MARKS_DIRECT", lambda h: h["defines"]["FLEET_EGRESS_MARKS_DIRECT"]),
    ("plugins.module_utils.dataplane.tc_egress_tables", "CLASS_IDS", lambda h: h["defines"]["FLEET_EGRESS_CLASSES"]),
    ("plugins.module_utils.dataplane.tc_egress_tables", "NSEC", lambda h: h["defines"]["FLEET_NSEC"]),
    ("plugins.module_utils.dataplane.maglev", "DEFAULT_RING_SIZE", lambda h: h["defines"]["FLEET_LB_DEFAULT_RING_SIZE"]),
    ("plugins.module_utils.dataplane.maglev", "BACKEND_NONE", lambda h: h["defines"]["FLEET_LB_BACKEND_NONE"]),
    (
        "plugins.module_utils.dataplane.xdp_lb_entries",
        "PROTOS",
        lambda h: {n[len("FLEET_LB_PROTO_") :].lower(): v for n, v in h["enums"]["fleet_lb_proto"].items()},
    ),
    ("plugins.module_utils.dataplane.xdp_lb_entries", "MODES", lambda h: names(h["enums"]["fleet_lb_mode"], "FLEET_LB_MODE_")),
    ("plugins.module_utils.programs.loader", "CHAIN_MAX_DEFAULT", lambda h: h["defines"]["FLEET_CHAIN_MAX"]),
    # names of objects chain.h defines, which the loader finds by name
    ("plugins.module_utils.programs.loader", "CHAIN_MAP", lambda h: "fleet_chain" if has_var(h["btf"], "fleet_chain") else None),
    ("plugins.module_utils.programs.loader", "SLOT_VAR", lambda h: "fleet_chain_slot" if has_var(h["btf"], "fleet_chain_slot") else None),
    ("plugins.module_utils.programs.loader", "NEXT_VAR", lambda h: "fleet_chain_next" if has_var(h["btf"], "fleet_chain_next") else None),
]


def test_every_define_and_enum_of_the_headers_is_read(header_facts):
    # a guard, not a list: the reader sees the headers' integer macros and enums, so COPIES can rely on them
    defines, enums = header_facts["defines"], header_facts["enums"]
    assert defines["FLEET_FILTER_RULES_MAX"] == 4096 and defines["FLEET_LB_RING_ENTRIES"] == 16 * 65537
    assert defines["FLEET_REFILL_CAP_NS"] == 4 * 10**9 and defines["FLEET_PARSE_TOO_DEEP"] == -3
    assert enums["fleet_verdict"] == {"FLEET_VERDICT_PASS": 0, "FLEET_VERDICT_DROP": 1, "FLEET_VERDICT_REDIRECT": 2, "FLEET_VERDICT_MAX": 3}
    texts = "".join(read(h) for h in HEADERS)
    assert set(enums) == set(ENUM.findall(texts))
    assert set(re.findall(r"^#define (FLEET_[A-Z0-9_]+) ", texts, re.M)) <= set(defines)


COPY_IDS = ["%s.%s" % (module.rsplit(".", 1)[1], constant) for module, constant, _expected in COPIES]


@pytest.mark.parametrize("module, constant, expected", COPIES, ids=COPY_IDS)
def test_python_copy_matches_the_header(header_facts, module, constant, expected):
    mod = importlib.import_module("ansible_collections.ebpf.fleet." + module)
    assert hasattr(mod, constant), "%s has no %s any more: if it was renamed, update COPIES in this file (the header value is %r)" % (
        module,
        constant,
        expected(header_facts),
    )
    want = expected(header_facts)
    assert want is not None, "%s.%s: the header no longer defines what it copies" % (module, constant)
    got = getattr(mod, constant)
    if isinstance(want, tuple):
        got = tuple(got)
    assert got == want, "%s.%s is %r but bpf/include/fleet gives %r" % (module, constant, got, want)
