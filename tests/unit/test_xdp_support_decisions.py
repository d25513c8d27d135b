"""xdp_support without the kernel: parsing of kernel answers and the decision rules for drivers and kernels
that this machine does not have."""

import ctypes

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import ethtool, netdev_genl, probes, xdp_drivers
from ansible_collections.ebpf.fleet.plugins.modules import xdp_support

XDP_OK = {"supported": "yes", "reason": "a xdp program loaded"}


def assess(driver, release, flags=None, kind="", bus_info="", xdp=None):
    return xdp_drivers.assess(driver, kind, bus_info, release, flags, xdp or XDP_OK)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "release, expected",
    [
        ("6.1.0-18-amd64", (6, 1, 0)),
        ("5.15.0-91-generic", (5, 15, 0)),
        ("4.18.0-513.el8.x86_64", (4, 18, 0)),
        ("6.18.44-fc-v769", (6, 18, 44)),
        ("5.4", (5, 4, 0)),
        ("garbage", ()),
        ("", ()),
    ],
)
def test_kernel_release_parsing(release, expected):
    assert probes.parse_release(release) == expected


def test_version_comparison_is_numeric_not_textual():
    assert probes.version_at_least("5.10.0", "5.9")
    assert not probes.version_at_least("4.9.0", "4.10")
    assert not probes.version_at_least("garbage", "4.8")


@pytest.mark.parametrize("text, expected", [("1\n", "yes"), ("2\n", "yes"), ("0\n", "no"), (None, "unknown"), ("x", "unknown")])
def test_jit_sysctl_parsing(text, expected):
    assert probes.parse_jit(text)["supported"] == expected


def test_xdp_feature_bits_decode_in_kernel_order_with_unknown_bits_named():
    assert netdev_genl.decode_xdp_features(0) == []
    assert netdev_genl.decode_xdp_features(35) == ["basic", "redirect", "rx_sg"]
    assert netdev_genl.decode_xdp_features(0x1F) == ["basic", "redirect", "ndo_xmit", "xsk_zerocopy", "hw_offload"]
    assert netdev_genl.decode_xdp_features(1 | (1 << 9)) == ["basic", "bit9"]


def test_drvinfo_struct_parsing_blanks_na_fields():
    info = ethtool.EthtoolDrvinfo(driver=b"mlx5_core", version=b"5.15.0-91-generic", fw_version=b"16.35.2000", bus_info=b"0000:03:00.0")
    assert ethtool.parse_drvinfo(info) == {"driver": "mlx5_core", "version": "5.15.0-91-generic", "firmware": "16.35.2000", "bus_info": "0000:03:00.0"}
    bridge = ethtool.EthtoolDrvinfo(driver=b"bridge", version=b"2.3", fw_version=b"N/A", bus_info=b"N/A")
    assert ethtool.parse_drvinfo(bridge)["firmware"] == "" and ethtool.parse_drvinfo(bridge)["bus_info"] == ""


def test_ethtool_structs_have_the_kernel_sizes():
    assert ctypes.sizeof(ethtool.EthtoolDrvinfo) == 196
    assert ctypes.sizeof(ethtool.EthtoolChannels) == 36


@pytest.mark.parametrize(
    "what, result, expected",
    [
        ("xdp", {"xdp": {"stage": "link", "errno": 0}}, "yes"),
        ("xdp", {"xdp": {"stage": "link", "errno": 22}}, "no"),  # EINVAL: pre-5.9 kernel, no XDP links
        ("tcx", {"tcx": {"stage": "link", "errno": 22}}, "no"),  # pre-6.6 kernel
        ("tcx", {"tcx": {"stage": "link", "errno": 1}}, "unknown"),  # EPERM: not a kernel answer
        ("xdp", {"error": "unshare(CLONE_NEWNET) failed: Operation not permitted"}, "unknown"),
        ("xdp", {}, "unknown"),
    ],
)
def test_link_probe_interpretation(what, result, expected):
    assert probes.interpret_link_probe(what, result)["supported"] == expected


# ---------------------------------------------------------------- decisions


def test_kernel_flags_win_over_the_table():
    # a driver the table says gained XDP in 4.9, but the kernel reports no flags: no
    report = assess("mlx5_core", "6.8.0", flags=[])
    assert report["native"]["supported"] == "no" and "xdp-features" in report["native"]["reason"]
    # an unknown driver with the basic flag: yes
    report = assess("fancy_nic", "6.8.0", flags=["basic", "redirect"])
    assert report["native"]["supported"] == "yes"
    assert report["recommended_mode"] == "native" and report["verdict"] == "native"


def test_mlx5_on_ubuntu_5_15_is_native_from_the_table():
    report = assess("mlx5_core", "5.15.0-91-generic")
    assert report["native"]["supported"] == "yes"
    assert "4.9" in report["native"]["reason"] and "driver table" in report["native"]["reason"]
    assert report["offload"]["supported"] == "no"
    assert report["max_native_mtu"] == 3498
    assert report["recommended_mode"] == "native"


def test_ixgbe_before_and_after_its_native_release():
    assert assess("ixgbe", "4.9.0")["native"]["supported"] == "no"
    assert "4.12" in assess("ixgbe", "4.9.0")["native"]["reason"]
    assert assess("ixgbe", "4.19.0")["native"]["supported"] == "yes"


def test_nfp_offloads_and_is_native():
    report = assess("nfp", "5.10.0-28-amd64")
    assert report["offload"]["supported"] == "yes" and "firmware" in report["offload"]["reason"]
    assert report["native"]["supported"] == "yes"
    assert assess("nfp", "6.8.0", flags=["basic", "hw_offload"])["offload"]["supported"] == "yes"
    assert assess("nfp", "6.8.0", flags=["basic"])["offload"]["supported"] == "no"


def test_unknown_driver_without_flags_is_unknown_never_no():
    report = assess("acme_nic", "5.10.0")
    assert report["native"]["supported"] == "unknown"
    assert "acme_nic" in report["native"]["reason"] and "probe" in report["native"]["reason"]
    assert report["offload"]["supported"] == "unknown"
    assert report["max_native_mtu"] is None
    assert report["generic"]["supported"] == "yes"
    assert report["recommended_mode"] == "generic" and report["verdict"] == "unknown"


def test_kernel_6_1_without_genl_falls_back_to_the_table():
    assert assess("virtio_net", "6.1.0-18-amd64", flags=None)["native"]["supported"] == "yes"
    assert assess("bridge", "6.1.0-18-amd64", flags=None)["native"]["supported"] == "no"
    assert assess("veth", "6.1.0-18-amd64", flags=None)["quirks"]


def test_tun_mode_decides_native_from_bus_info():
    assert assess("tun", "5.10.0", bus_info="tap")["native"]["supported"] == "yes"
    assert assess("tun", "5.10.0", bus_info="tun")["native"]["supported"] == "no"
    assert assess("tun", "5.10.0", bus_info="")["native"]["supported"] == "unknown"


def test_bond_depends_on_its_ports():
    assert assess("bonding", "5.15.0")["native"]["supported"] == "unknown"


def test_kind_is_used_when_ethtool_reports_no_driver():
    assert assess("", "6.1.0", kind="vlan")["native"]["supported"] == "no"
    assert assess("", "6.1.0", kind="")["native"]["supported"] == "unknown"


def test_generic_follows_the_xdp_program_type_probe():
    assert assess("bridge", "4.4.0", xdp={"supported": "no", "reason": "x"})["verdict"] == "unsupported"
    assert assess("bridge", "4.4.0", xdp={"supported": "unknown", "reason": "x"})["generic"]["supported"] == "unknown"


def test_overall_verdict_is_the_weakest():
    assert xdp_drivers.overall_verdict(["native", "native"]) == "native"
    assert xdp_drivers.overall_verdict(["native", "generic"]) == "generic"
    assert xdp_drivers.overall_verdict(["native", "unknown", "generic"]) == "unknown"
    assert xdp_drivers.overall_verdict(["unsupported", "native"]) == "unsupported"
    assert xdp_drivers.overall_verdict([]) == "unknown"


def test_requirement_messages_name_interface_and_what_is_missing():
    bridge = assess("bridge", "6.1.0")
    msg = xdp_drivers.requirement_failure("br0", "native", bridge)
    assert msg.startswith("br0: native XDP is required but native is no")
    assert xdp_drivers.requirement_failure("br0", "generic", bridge) is None
    assert xdp_drivers.requirement_failure("br0", "any", bridge) is None
    assert xdp_drivers.requirement_failure("br0", "none", bridge) is None
    unknown = assess("acme_nic", "5.10.0", xdp={"supported": "unknown", "reason": "x"})
    assert "any mode" in xdp_drivers.requirement_failure("eth3", "any", unknown)


def test_every_table_entry_is_consistent():
    for name, entry in xdp_drivers.DRIVERS.items():
        assert entry.name == name
        if entry.native == "yes":
            assert probes.parse_release(entry.native_since), name
        if entry.offload_since:
            assert entry.name == "nfp"


# ---------------------------------------------------------------- module plumbing

LINKS = [
    {"ifname": "lo", "ifindex": 1, "loopback": True},
    {"ifname": "eth0", "ifindex": 2, "loopback": False},
    {"ifname": "br0", "ifindex": 3, "loopback": False},
]


def test_default_selection_leaves_out_loopback():
    assert [item["ifname"] for item in xdp_support.select_interfaces(LINKS, [])] == ["eth0", "br0"]


def test_selection_keeps_order_and_drops_duplicates():
    assert [item["ifname"] for item in xdp_support.select_interfaces(LINKS, ["br0", "lo", "br0"])] == ["br0", "lo"]


def test_missing_interface_error_names_it_and_the_existing_ones():
    with pytest.raises(ValueError) as err:
        xdp_support.select_interfaces(LINKS, ["eth9"])
    assert "'eth9'" in str(err.value) and "br0, eth0, lo" in str(err.value)


def test_argument_spec_matches_the_documentation():
    import yaml

    from ansible_collections.ebpf.fleet.plugins.doc_fragments import paths as paths_fragment

    doc = yaml.safe_load(xdp_support.DOCUMENTATION)
    assert "ebpf.fleet.paths" in doc["extends_documentation_fragment"]
    options = dict(doc["options"], **yaml.safe_load(paths_fragment.ModuleDocFragment.DOCUMENTATION)["options"])
    spec = xdp_support.argument_spec()
    assert set(options) == set(spec)
    for name, option in options.items():
        assert option["type"] == spec[name]["type"]
        assert option.get("default") == spec[name].get("default")
        assert option.get("choices") == spec[name].get("choices")


def test_probe_result_overrides_native_and_recommendation():
    report = assess("acme_nic", "5.10.0")
    xdp_support.apply_probe(report, {"status": "confirmed", "reason": "ok"})
    assert report["native"]["supported"] == "yes" and report["recommended_mode"] == "native"
    report = assess("acme_nic", "5.10.0")
    xdp_support.apply_probe(report, {"status": "refused", "reason": "no"})
    assert report["native"]["supported"] == "no" and report["verdict"] == "generic"
    report = assess("acme_nic", "5.10.0")
    xdp_support.apply_probe(report, {"status": "skipped", "reason": "check mode"})
    assert report["native"]["supported"] == "unknown"
