"""xdp_program / tc_program without the kernel: the plan (idempotence, order, mode and attach method),
map compatibility, the offload path and argument validation.

The kernel layer is replaced by fakes here only where this machine cannot show the case (an offload-capable
NIC cannot exist on this VM) or where a decision is pure; the real-kernel behaviour is in tests/integration."""

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import InputError
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import attach, libbpf, netlink
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import bcc_pins, chain, deploy, loader, program_module
from ansible_collections.ebpf.fleet.plugins.plugin_utils import compile as controller_compile

SHA_A, SHA_B = "a" * 64, "b" * 64


def info(sha=SHA_A, program="prog", has_chain=True):
    return loader.ObjectInfo(path="/x.o", sha256=sha, program=program, section="xdp", prog_type="xdp", has_chain=has_chain)


def entry(dep, prio, sha=SHA_A, prog_id=0, program="prog"):
    return chain.Entry(deployment=dep, priority=prio, program=program, sha256=sha, prog_id=prog_id, tag="t%d" % prog_id)


@pytest.fixture
def hooks(monkeypatch, tmp_path):
    """A fake host: one interface eth9, the hook state given by the test, TCX supported unless told."""
    state = {"entries": [], "live": [], "mode": "", "method": "", "tcx": True}

    def read_hook(pin_root, state_dir, hook, ifname, ifindex):
        return chain.HookState(
            hook=hook, ifname=ifname, ifindex=ifindex, entries=list(state["entries"]), mode=state["mode"], method=state["method"], live_ids=list(state["live"])
        )

    monkeypatch.setattr(netlink, "ifindex", lambda name: 9)
    monkeypatch.setattr(chain, "read_hook", read_hook)
    monkeypatch.setattr(attach, "tcx_supported", lambda ifindex: state["tcx"])
    monkeypatch.setattr(deploy, "_check_foreign_xdp", lambda ifname, ifindex: None)
    state["req"] = lambda **kw: deploy.Request(
        **dict(dict(name="guard", hook="xdp", interfaces=["eth9"], state_dir=str(tmp_path), pin_root="/sys/fs/bpf/t"), **kw)
    )
    return state


# ---------------------------------------------------------------- idempotence and actions


def test_same_object_same_order_same_mode_is_no_change(hooks):
    hooks.update(entries=[entry("guard", 50, prog_id=7)], live=[7], mode="native", method="link")
    [hp] = deploy.plan(hooks["req"](mode="native"), info())
    assert hp.action == "none"


def test_new_checksum_is_an_update(hooks):
    hooks.update(entries=[entry("guard", 50, prog_id=7)], live=[7], mode="native", method="link")
    [hp] = deploy.plan(hooks["req"](mode="native"), info(sha=SHA_B))
    assert hp.action == "update" and hp.after[0].sha256 == SHA_B


def test_new_priority_reorders(hooks):
    hooks.update(entries=[entry("count", 10, prog_id=3), entry("guard", 50, prog_id=7)], live=[3, 7], mode="native", method="link")
    [hp] = deploy.plan(hooks["req"](mode="native", priority=5), info())
    assert hp.action == "update"
    assert [e.deployment for e in hp.after] == ["guard", "count"]


def test_nothing_attached_is_an_attach(hooks):
    [hp] = deploy.plan(hooks["req"](mode="native"), info())
    assert hp.action == "attach" and hp.mode == "native" and hp.method == "link"


def test_record_that_disagrees_with_the_kernel_is_repaired(hooks):
    hooks.update(entries=[entry("guard", 50, prog_id=7)], live=[8], mode="native", method="link")
    [hp] = deploy.plan(hooks["req"](mode="native"), info())
    assert hp.action == "repair"


def test_absent_detaches_only_when_last(hooks, tmp_path):
    hooks.update(entries=[entry("guard", 50, prog_id=7)], live=[7], mode="native", method="link")
    from ansible_collections.ebpf.fleet.plugins.module_utils.host import records

    records.write_hook(str(tmp_path), "xdp@eth9", {"pin_root": "/sys/fs/bpf/t", "entries": [entry("guard", 50).as_dict()]})
    [hp] = deploy.plan(hooks["req"](state="absent", interfaces=[]), None)
    assert hp.action == "detach" and hp.after == []
    hooks.update(entries=[entry("count", 10, prog_id=3), entry("guard", 50, prog_id=7)], live=[3, 7])
    [hp] = deploy.plan(hooks["req"](state="absent", interfaces=[]), None)
    assert hp.action == "update" and [e.deployment for e in hp.after] == ["count"]


# ---------------------------------------------------------------- XDP mode and auto fallback


@pytest.mark.parametrize(
    "want, fallback, current, ok",
    [
        ("native", False, "native", True),
        ("native", False, "generic", False),
        ("generic", False, "generic", True),
        ("auto", False, "native", True),
        ("auto", False, "generic", False),
        ("auto", True, "generic", True),
    ],
)
def test_mode_matches(want, fallback, current, ok):
    req = deploy.Request(name="g", hook="xdp", mode=want, allow_generic_fallback=fallback)
    assert deploy._mode_matches(req, current) is ok


def test_mode_conflict_with_other_programs_names_them(hooks):
    hooks.update(entries=[entry("count", 10, prog_id=3)], live=[3], mode="generic", method="link")
    with pytest.raises(deploy.DeployError, match=r"mode=native conflicts with the generic mode .* \(count\)"):
        deploy.plan(hooks["req"](mode="native"), info())


def test_auto_joins_a_generic_chain_only_when_fallback_is_allowed(hooks):
    hooks.update(entries=[entry("count", 10, prog_id=3)], live=[3], mode="generic", method="link")
    with pytest.raises(deploy.DeployError):
        deploy.plan(hooks["req"](mode="auto"), info())
    [hp] = deploy.plan(hooks["req"](mode="auto", allow_generic_fallback=True), info())
    assert hp.mode == "generic" and hp.action == "update"


def test_native_attach_without_driver_support_falls_back_only_when_allowed(monkeypatch):
    calls = []

    def link_create(prog_fd, ifindex, attach_type, flags):
        calls.append(flags)
        if flags == libbpf.XDP_FLAGS_DRV_MODE:
            raise libbpf.BpfError("bpf_link_create", 95)
        return 42

    monkeypatch.setattr(libbpf, "link_create", link_create)
    with pytest.raises(attach.NoNativeXdp):
        attach.link_attach("xdp", 9, 5, "native")
    assert attach.link_attach("xdp", 9, 5, "generic") == 42
    assert calls == [libbpf.XDP_FLAGS_DRV_MODE, libbpf.XDP_FLAGS_SKB_MODE]


# ---------------------------------------------------------------- TC attach method


def test_tc_auto_uses_tcx_when_the_kernel_has_it_and_clsact_otherwise(hooks):
    [hp] = deploy.plan(hooks["req"](hook="tc_egress", tc_attach="auto"), info())
    assert hp.method == "link"
    hooks["tcx"] = False
    [hp] = deploy.plan(hooks["req"](hook="tc_egress", tc_attach="auto"), info())
    assert hp.method == "clsact"


def test_tc_auto_keeps_the_method_of_a_running_chain(hooks):
    hooks.update(entries=[entry("guard", 50, prog_id=7)], live=[7], method="clsact")
    [hp] = deploy.plan(hooks["req"](hook="tc_egress", tc_attach="auto"), info())
    assert hp.method == "clsact" and hp.action == "none"


def test_tc_forced_tcx_on_a_kernel_without_it_fails_clearly(hooks):
    hooks["tcx"] = False
    with pytest.raises(deploy.DeployError, match="attach=tcx: this kernel has no TCX links"):
        deploy.plan(hooks["req"](hook="tc_egress", tc_attach="tcx"), info())


def test_tc_method_change_is_a_change(hooks):
    hooks.update(entries=[entry("guard", 50, prog_id=7)], live=[7], method="link")
    [hp] = deploy.plan(hooks["req"](hook="tc_egress", tc_attach="clsact"), info())
    assert hp.action == "update" and hp.method == "clsact"


# ---------------------------------------------------------------- offload (mocked)


def test_offload_loads_for_the_device_and_attaches_with_hw_flags(monkeypatch):
    """An offload-capable NIC (Netronome nfp) cannot exist on this VM: the offload path is checked with fakes.
    The program must be loaded for the device (prog ifindex) and attached with XDP_FLAGS_HW_MODE."""
    built, created = [], []
    hook = chain.HookState(hook="xdp", ifname="nfp0", ifindex=4)
    plan = deploy.HookPlan(state=hook, before=[], after=[entry("guard", 50)], action="attach", mode="offload", method="link")

    class Gen:
        entries = [entry("guard", 50, prog_id=11)]
        instances = []

        def close(self):
            pass

    def build_generation(state, entries, infos, maps, offload_ifindex=0):
        built.append(offload_ifindex)
        return Gen()

    def swap(gen, pin_root, mode, method, allow_fallback=False):
        created.append(attach.XDP_MODE_FLAGS[mode])
        return {"mode": mode, "method": method, "fallback": False, "reattached": False}

    monkeypatch.setattr(chain, "build_generation", build_generation)
    monkeypatch.setattr(chain, "swap", swap)
    monkeypatch.setattr(deploy.records, "write_hook", lambda *a: None)
    monkeypatch.setattr(deploy.bpffs, "pin", lambda *a: None)
    req = deploy.Request(name="guard", hook="xdp", interfaces=["nfp0"], mode="offload", pin_root="/nonexistent")
    results = deploy.apply(req, info(), [plan], {})
    assert built == [4] and created == [libbpf.XDP_FLAGS_HW_MODE]
    assert results["xdp@nfp0"]["mode"] == "offload"


@pytest.mark.parametrize(
    "flags, driver, refused",
    [
        (["basic", "hw_offload"], "nfp", False),
        (["basic", "redirect"], "veth", True),
        (None, "nfp", False),  # no xdp-features (before 6.3): the driver table says nfp offloads
        (None, "virtio_net", True),
    ],
)
def test_offload_is_planned_only_for_a_device_that_can(hooks, monkeypatch, flags, driver, refused):
    monkeypatch.setattr(deploy.netdev_genl, "xdp_features", lambda ifindexes: None if flags is None else {9: {"flags": flags}})
    monkeypatch.setattr(deploy.ethtool, "drvinfo", lambda ifname: {"driver": driver})
    req = hooks["req"](mode="offload")
    if refused:
        with pytest.raises(deploy.DeployError, match="mode=offload: interface eth9 \\(driver %s\\) cannot run XDP programs on the NIC" % driver):
            deploy.plan(req, info())
    else:
        [hp] = deploy.plan(req, info())
        assert hp.action == "attach" and hp.mode == "offload"


# ---------------------------------------------------------------- maps


def test_map_compatibility_names_each_difference():
    declared = {"type": "hash", "key_size": 4, "value_size": 8, "max_entries": 1024, "map_flags": 0}
    assert loader.incompatible(declared, dict(declared)) == []
    live = dict(declared, max_entries=16, value_size=16)
    assert loader.incompatible(declared, live) == ["value_size 16 != 8", "max_entries 16 != 1024"]


def test_bcc_maps_carry_over_when_compatible_and_fail_when_not(monkeypatch):
    layouts = {
        1: {"type": "array", "key_size": 4, "value_size": 8, "max_entries": 4, "map_flags": 0},
        2: {"type": "array", "key_size": 4, "value_size": 8, "max_entries": 4, "map_flags": 0},
        3: {"type": "array", "key_size": 4, "value_size": 8, "max_entries": 64, "map_flags": 0},
    }
    copied = []
    monkeypatch.setattr(libbpf, "map_info", lambda fd: layouts[fd])
    monkeypatch.setattr(bcc_pins, "copy_entries", lambda src, dst: copied.append((src, dst)))
    report = bcc_pins.carry_over({"hits": 1, "old": 1}, {"hits": 2, "new": 3}, False)
    assert report == {"reused": ["hits"], "created": ["new"], "incompatible": [], "obsolete": ["old"]}
    assert copied == [(1, 2)]
    with pytest.raises(bcc_pins.BccError, match=r"hits \(max_entries 4 != 64\).*replace_incompatible_maps"):
        bcc_pins.carry_over({"hits": 1}, {"hits": 3}, False)
    report = bcc_pins.carry_over({"hits": 1}, {"hits": 3}, True)
    assert report["incompatible"][0]["map"] == "hits"


def test_a_program_without_the_chain_map_can_only_be_alone_or_last():
    hook = chain.HookState(hook="xdp", ifname="eth9", ifindex=9)
    infos = {"bcc": info(has_chain=False), "count": info()}
    with pytest.raises(loader.LoadError, match="'bcc' .* can only run alone or last on xdp@eth9"):
        chain.build_generation(hook, [entry("bcc", 10), entry("count", 20)], infos, chain.MapSet("/nonexistent"))


# ---------------------------------------------------------------- argument validation


class FailJson(Exception):
    pass


class FakeModule:
    def __init__(self, **params):
        self.params = dict(
            name="guard",
            state="present",
            interfaces=["eth0"],
            object="/x.o",
            src=None,
            compiler="controller",
            program="",
            defines={},
            include_dirs=[],
            priority=50,
            pin_root="/sys/fs/bpf/t",
            state_dir="/tmp/s",
            replace_incompatible_maps=False,
        )
        self.params.update(params)
        self.check_mode = False

    def fail_json(self, msg, **kwargs):
        raise FailJson(msg)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(name="a.b"), "name='a.b' is not a valid name: expected 1 to 64 characters"),
        (dict(name=""), "name='' is not a valid name"),
        (dict(interfaces=["a-very-long-interface-name"]), "interfaces: 'a-very-long-interface-name' is not an interface"),
        (dict(interfaces=[]), "interfaces: state=present needs at least one interface"),
        (dict(object=None), "exactly one of object or src is required with state=present (got neither)"),
        (dict(src="/x.c", compiler="host"), "exactly one of object or src is required with state=present (got both)"),
        (dict(object=None, src="/x.c"), "compiled by the action plugin ebpf.fleet.xdp_program"),
        (dict(priority=-1), "priority=-1: expected an integer from 0 to 1000000"),
    ],
)
def test_argument_errors_name_field_value_and_expectation(params, message):
    with pytest.raises((FailJson, InputError)) as err:
        program_module._validate(FakeModule(**params), "xdp")
    assert message in str(err.value)


def test_object_and_src_together_are_accepted_from_the_action_plugin():
    program_module._validate(FakeModule(src="/x.c", object="/tmp/object.o"), "xdp")


def test_bcc_needs_the_function_name(tmp_path):
    src = tmp_path / "p.c"
    src.write_text("int f(void *ctx) { return 2; }\n")
    with pytest.raises(FailJson, match="program: compiler=bcc needs the name of the C function"):
        program_module.bcc_info(FakeModule(src=str(src), object=None, compiler="bcc"), "xdp")
    a = program_module.bcc_info(FakeModule(src=str(src), object=None, compiler="bcc", program="f"), "xdp")
    b = program_module.bcc_info(FakeModule(src=str(src), object=None, compiler="bcc", program="f", defines={"X": 1}), "xdp")
    assert a.sha256 != b.sha256 and a.compiler == "bcc" and not a.has_chain


def test_controller_clang_arguments_and_bad_define():
    cmd = controller_compile.clang_args("clang", "/p/x.c", "/o/x.o", {"PORT": 53, "DEBUG": None}, ["/inc"], "x86_64")
    assert cmd[:8] == ["clang", "-O2", "-g", "-target", "bpf", "-c", "x.c", "-o"]  # run in /p (clang.cwd)
    assert "-I/inc" in cmd and "-I%s" % controller_compile.COLLECTION_INCLUDE in cmd
    assert cmd[-2:] == ["-DDEBUG", "-DPORT=53"]
    with pytest.raises(Exception, match="defines: '1X' is not a C macro name"):
        controller_compile.clang_args("clang", "x.c", "x.o", {"1X": 1}, [], "x86_64")
