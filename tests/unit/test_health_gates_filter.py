"""health_gates judges a host by how its bpf_info counters rose during an observation window, and names a bad gate."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.filter import health_gates as plugin

health_gates = plugin.FilterModule().filters()["health_gates"]

PASS = "deployments.filter.counters.filter_stats.verdicts.pass"
DROP = "deployments.filter.counters.filter_stats.verdicts.drop"
VERDICTS = "deployments.filter.counters.filter_stats.verdicts.*"
BACKENDS = 'deployments.lb.counters.lb_backend_stats.counters | {web1: "0".packets, web2: "1".packets, web3: "2".packets}'
BACKEND_LIST = 'deployments.lb.counters.lb_backend_stats.counters.["0", "1", "2"][].packets'
MALFORMED = "sum(deployments.filter.counters.filter_stats.counters.[malformed_drop, malformed_pass][].packets)"


def reading(passed=0, dropped=0, backends=(0, 0, 0), malformed=0, **extra):
    """A registered bpf_info result (counters: true) of a host running the filter and the load balancer."""
    counters = {
        "default_pass": {"packets": passed, "bytes": 64 * passed},
        "port_drop": {"packets": dropped, "bytes": 64 * dropped},
        "malformed_drop": {"packets": malformed, "bytes": 60 * malformed},
        "malformed_pass": {"packets": 0, "bytes": 0},
    }
    result = {
        "changed": False,
        "failed": False,
        "interfaces": {"eth1": {"ifindex": 3}},
        "deployments": {
            "filter": {"hook": "xdp", "counters": {"filter_stats": {"counters": counters, "verdicts": {"pass": passed, "drop": dropped + malformed}}}},
            "lb": {
                "hook": "xdp",
                "counters": {"lb_backend_stats": {"counters": {str(n): {"packets": p, "bytes": 100 * p} for n, p in enumerate(backends)}, "verdicts": {}}},
            },
        },
    }
    result.update(extra)
    return result


def gate(**fields):
    return dict({"name": "g", "query": PASS, "min": 1}, **fields)


def one(before, after, **fields):
    results = health_gates(before, after, [gate(**fields)])
    assert len(results) == 1 and sorted(results[0]) == ["bound", "message", "name", "ok", "skipped", "value"]
    return results[0]


READING = object()


def refused(gates, before=READING, after=READING):
    with pytest.raises(AnsibleFilterError) as err:
        health_gates(reading() if before is READING else before, reading() if after is READING else after, gates)
    text = str(err.value)
    assert "Traceback" not in text and "\n" not in text
    return text


# ---------------------------------------------------------------- numbers


def test_a_number_is_judged_by_its_rise_during_the_window_not_its_total():
    got = one(reading(passed=5000), reading(passed=5003), name="web traffic is passed", min=100)
    assert got == {
        "name": "web traffic is passed",
        "ok": False,
        "skipped": False,
        "value": 3,
        "bound": "min 100",
        "message": 'gate "web traffic is passed": rose by 3 during the window, below min 100 (%s)' % PASS,
    }
    got = one(reading(passed=5000), reading(passed=5150), min=100)
    assert got["ok"] and got["value"] == 150
    assert got["message"] == 'gate "g": rose by 150 during the window, within min 100 (%s)' % PASS


def test_max_both_bounds_and_the_bounds_themselves_pass():
    before = reading(passed=10)
    assert one(before, reading(passed=15), min=None, max=5)["ok"]
    above = one(before, reading(passed=16), min=None, max=5)
    assert not above["ok"] and above["bound"] == "max 5"
    assert above["message"].startswith('gate "g": rose by 6 during the window, above max 5 (')
    for after, ok, word in ((14, False, "below min 5"), (15, True, "within min 5, max 8"), (18, True, "within"), (19, False, "above max 8")):
        got = one(before, reading(passed=after), min=5, max=8)
        assert got["ok"] is ok and got["bound"] == "min 5, max 8" and word in got["message"], got


def test_a_query_summed_with_sum_is_one_number():
    got = one(reading(malformed=7), reading(malformed=7), name="no malformed packets", query=MALFORMED, min=None, max=0)
    assert got["ok"] and got["value"] == 0 and got["bound"] == "max 0"
    got = one(reading(malformed=7), reading(malformed=9), query=MALFORMED, min=None, max=0)
    assert not got["ok"] and got["value"] == 2
    assert got["message"] == 'gate "g": rose by 2 during the window, above max 0 (%s)' % MALFORMED


def test_a_counter_that_fell_fails_whatever_when_missing_says():
    got = one(reading(passed=500), reading(passed=40), min=None, max=1000, when_missing="pass")
    assert not got["ok"] and got["value"] == -460
    assert "fell by 460 during the window (a counter reset?), cannot be judged" in got["message"]


def test_a_value_missing_before_the_window_counts_as_zero():
    before = reading()
    del before["deployments"]["filter"]
    got = one(before, reading(passed=120), min=100)
    assert got["ok"] and got["value"] == 120


# ---------------------------------------------------------------- lists and objects


def test_an_object_is_checked_key_by_key_and_the_failing_keys_are_named():
    got = one(reading(backends=(10, 10, 10)), reading(backends=(50, 10, 90)), name="every backend receives traffic", query=BACKENDS, each="backend")
    assert not got["ok"] and got["value"] == {"web1": 40, "web2": 0, "web3": 80}
    assert got["message"] == 'gate "every backend receives traffic": backend web2 rose by 0, below min 1 (%s)' % BACKENDS
    got = one(reading(backends=(10, 10, 10)), reading(backends=(50, 11, 90)), query=BACKENDS, each="backend")
    assert got["ok"] and got["message"].startswith('gate "g": every backend (3) within min 1 during the window (')


def test_a_list_is_checked_element_by_element_and_the_failing_ones_are_named_by_index():
    got = one(reading(backends=(10, 10, 10)), reading(backends=(10, 12, 10)), query=BACKEND_LIST)
    assert not got["ok"] and got["value"] == [0, 2, 0]
    assert got["message"] == ('gate "g": element 0 rose by 0, below min 1; element 2 rose by 0, below min 1 (%s)' % BACKEND_LIST)
    got = one(reading(backends=(10, 10, 10)), reading(backends=(10, 12, 10)), query=BACKEND_LIST, each="backend")
    assert "backend 0 rose by 0, below min 1; backend 2 rose by 0" in got["message"]


def test_an_object_key_or_list_index_missing_before_the_window_counts_as_zero():
    before = reading(backends=(10, 10))
    got = one(before, reading(backends=(20, 20, 5)), query=BACKENDS, min=5)
    assert got["ok"] and got["value"] == {"web1": 10, "web2": 10, "web3": 5}
    got = one(before, reading(backends=(20, 20, 5)), query="deployments.lb.counters.lb_backend_stats.counters.*.packets", min=5)
    assert got["ok"] and got["value"] == [10, 10, 5]


def test_many_failing_elements_are_counted_not_all_named():
    after = reading(backends=(0,) * 12)
    got = one(reading(backends=(0,) * 12), after, query="deployments.lb.counters.lb_backend_stats.counters.*.packets")
    assert got["message"].count("rose by 0") == 5 and "; and 7 more (" in got["message"]


def test_a_null_element_fails_or_is_left_out_by_when_missing():
    query = "[deployments.filter.counters.filter_stats.verdicts.pass, deployments.nothing.here]"
    got = one(reading(passed=1), reading(passed=9), query=query)
    assert not got["ok"] and got["value"] == [8, None] and "element 1 found nothing (" in got["message"]
    for when in ("pass", "skip"):
        got = one(reading(passed=1), reading(passed=9), query=query, when_missing=when)
        assert got["ok"] and not got["skipped"] and got["value"] == [8, None]
        assert "every element (1) within min 1 during the window; 1 found nothing (when_missing: %s)" % when in got["message"]


def test_a_query_that_changed_kind_during_the_window_cannot_be_judged():
    before, after = reading(), reading()
    before["x"], after["x"] = 5, [6, 7]
    got = one(before, after, query="x")
    assert not got["ok"] and got["value"] is None
    assert "found a number before the window and a list after it, cannot be judged" in got["message"]


# ---------------------------------------------------------------- ratios


def test_the_share_of_dropped_packets_is_the_rise_of_query_over_the_rise_of_of_summed():
    before, after = reading(passed=1000, dropped=10), reading(passed=1338, dropped=22)
    got = one(before, after, name="few packets dropped", query=DROP, of=VERDICTS, min=None, max=0.01)
    assert not got["ok"] and got["value"] == pytest.approx(12 / 350) and got["bound"] == "max 0.01"
    assert got["message"] == ('gate "few packets dropped": ratio 0.03429 during the window (rose by 12 of 350), above max 0.01 (%s / %s)' % (DROP, VERDICTS))
    after = reading(passed=2000, dropped=12)
    got = one(before, after, query=DROP, of=VERDICTS, min=None, max=0.01)
    assert got["ok"] and got["value"] == pytest.approx(2 / 1002)


def test_a_ratio_that_would_read_as_its_bound_shows_more_digits():
    got = one(reading(), reading(passed=9899996, dropped=100004), query=DROP, of=VERDICTS, min=None, max=0.01)
    assert not got["ok"] and "ratio 0.0100004 during the window (rose by 100004 of 10000000), above max 0.01" in got["message"]


def test_each_element_of_a_list_is_divided_by_the_summed_denominator():
    got = one(
        reading(backends=(0, 0, 0)),
        reading(backends=(60, 30, 10)),
        query=BACKENDS,
        of="deployments.lb.counters.lb_backend_stats.counters.*.packets",
        min=0.2,
        each="backend",
    )
    assert got["value"] == {"web1": 0.6, "web2": 0.3, "web3": 0.1}
    assert 'backend web3 ratio 0.1 (rose by 10 of 100), below min 0.2' in got["message"]


@pytest.mark.parametrize(
    "when, ok, skipped, word",
    [
        ("fail", False, False, "fails (when_missing: fail)"),
        ("pass", True, False, "passes (when_missing: pass)"),
        ("skip", True, True, "skipped (when_missing: skip)"),
    ],
)
def test_a_window_without_traffic_cannot_vouch_for_the_host(when, ok, skipped, word):
    got = one(reading(passed=100, dropped=4), reading(passed=100, dropped=4), query=DROP, of=VERDICTS, min=None, max=0.01, when_missing=when)
    assert (got["ok"], got["skipped"], got["value"]) == (ok, skipped, None)
    assert got["message"] == 'gate "g": no traffic during the window (%s rose by 0), cannot vouch for the host; %s (%s / %s)' % (VERDICTS, word, DROP, VERDICTS)


def test_a_denominator_that_finds_nothing_or_fell_is_reported():
    got = one(reading(), reading(passed=5), query=PASS, of="deployments.nothing", when_missing="skip")
    assert got["skipped"] and "the denominator found nothing after the window" in got["message"]
    got = one(reading(passed=50), reading(passed=60, dropped=0), query=DROP, of="deployments.filter.counters.filter_stats.counters.default_pass.bytes", min=0)
    assert got["ok"] is True
    got = one(reading(passed=50), reading(passed=10), query=DROP, of=VERDICTS, min=0)
    assert not got["ok"] and "the denominator fell by 40 (a counter reset during the window?)" in got["message"]


# ---------------------------------------------------------------- when the query finds nothing


@pytest.mark.parametrize(
    "query",
    ["deployments.egress.counters.egress_stats.verdicts.drop", "values(deployments)[*].counters.egress_stats.verdicts.drop", "deployments.lb.interfaces"],
)
@pytest.mark.parametrize(
    "when, ok, skipped, word",
    [
        (None, False, False, "fails (when_missing: fail)"),
        ("fail", False, False, "fails (when_missing: fail)"),
        ("pass", True, False, "passes (when_missing: pass)"),
        ("skip", True, True, "skipped (when_missing: skip)"),
    ],
)
def test_a_query_that_finds_nothing_null_or_empty_follows_when_missing(query, when, ok, skipped, word):
    fields = {"query": query} if when is None else {"query": query, "when_missing": when}
    before, after = reading(), reading()
    after["deployments"]["lb"]["interfaces"] = []
    got = one(before, after, **fields)
    assert (got["ok"], got["skipped"], got["value"]) == (ok, skipped, None)
    assert got["message"] == 'gate "g": found nothing after the window; %s (%s)' % (word, query)


def test_a_sum_over_a_deployment_the_host_lacks_finds_nothing_but_a_sum_over_none_of_many_is_zero():
    """sum() given null (the path does not exist) finds nothing, so when_missing decides; a projection over every
    deployment that matches none is an empty list, and its sum() is 0: name the deployment to catch its absence."""
    before, after = reading(malformed=1), reading(malformed=1)
    for result in (before, after):
        del result["deployments"]["filter"]
    got = one(before, after, query=MALFORMED, min=None, max=0)
    assert not got["ok"] and got["message"] == 'gate "g": found nothing after the window; fails (when_missing: fail) (%s)' % MALFORMED
    assert one(before, after, query=MALFORMED, min=None, max=0, when_missing="skip")["skipped"]
    got = one(before, after, query="sum(values(deployments)[*].counters.filter_stats.verdicts.drop)", min=None, max=0)
    assert got["ok"] and got["value"] == 0


def test_no_gates_is_no_result_and_results_keep_the_gates_order():
    assert health_gates(reading(), reading(), []) == []
    assert health_gates(reading(), reading(), None) == []
    names = [item["name"] for item in health_gates(reading(), reading(passed=3), [gate(name="b"), gate(name="a")])]
    assert names == ["b", "a"]


def test_the_failing_messages_for_a_fail_msg_are_the_items_not_ok():
    results = health_gates(reading(), reading(passed=3), [gate(name="ok", min=1), gate(name="low", min=10), gate(name="gone", query="deployments.x")])
    failed = [item["message"] for item in results if not item["ok"]]
    assert failed == [
        'gate "low": rose by 3 during the window, below min 10 (%s)' % PASS,
        'gate "gone": found nothing after the window; fails (when_missing: fail) (deployments.x)',
    ]


# ---------------------------------------------------------------- bad gate definitions


@pytest.mark.parametrize(
    "gates, message",
    [
        ("web", 'deploy_xdp_health_gates: "web" is not a list of gates (expected a list of dicts with name, query, min and/or max)'),
        ({"name": "x"}, "deploy_xdp_health_gates: {'name': 'x'} is not a list of gates"),
        ([gate(), "x"], 'deploy_xdp_health_gates[1]: "x" is not a dict (expected a gate: name, query, min and/or max)'),
        ([{"query": PASS, "min": 1}], "deploy_xdp_health_gates[0].name: null is not a name (expected a non-empty string, unique in the list)"),
        ([gate(name="  ")], 'deploy_xdp_health_gates[0].name: "  " is not a name'),
        ([gate(name=5)], "deploy_xdp_health_gates[0].name: 5 is not a name"),
        (
            [gate(name="a"), gate(name="b"), gate(name="a")],
            'deploy_xdp_health_gates[2] ("a").name: "a" is not unique (expected a name of its own; deploy_xdp_health_gates[0] has it too)',
        ),
        (
            [gate(name="x", mni=1)],
            'deploy_xdp_health_gates[0] ("x").mni: unknown field (valid fields: name, query, of, min, max, when_missing, each); did you mean min?',
        ),
        ([gate(name="x", qurey=PASS)], 'deploy_xdp_health_gates[0] ("x").qurey: unknown field'),
        ([{"name": "x", "min": 1}], 'deploy_xdp_health_gates[0] ("x").query: missing (expected a JMESPath expression over the bpf_info result)'),
        ([gate(name="x", query="")], 'deploy_xdp_health_gates[0] ("x").query: "" is not a JMESPath expression (a non-empty string)'),
        ([gate(name="x", query=["a"])], 'deploy_xdp_health_gates[0] ("x").query: [\'a\'] is not a JMESPath expression'),
        ([gate(name="x", of=3)], 'deploy_xdp_health_gates[0] ("x").of: 3 is not a JMESPath expression'),
        (
            [gate(), gate(name="x"), gate(name="y", max="ten")],
            'deploy_xdp_health_gates[2] ("y").max: "ten" is not a number (expected a YAML number such as 100 or 0.01, unquoted)',
        ),
        ([gate(name="x", min="100")], 'deploy_xdp_health_gates[0] ("x").min: "100" is not a number'),
        ([gate(name="x", min=True)], 'deploy_xdp_health_gates[0] ("x").min: true is not a number'),
        ([gate(name="x", max=float("nan"))], 'deploy_xdp_health_gates[0] ("x").max: NaN is not a number'),
        ([gate(name="x", min=None)], 'deploy_xdp_health_gates[0] ("x"): neither min nor max is set (expected at least one bound)'),
        ([gate(name="x", min=10, max=5)], 'deploy_xdp_health_gates[0] ("x").min: 10 is above max 5 (expected min <= max)'),
        ([gate(name="x", when_missing="ignore")], 'deploy_xdp_health_gates[0] ("x").when_missing: "ignore" is not one of fail, pass, skip'),
        ([gate(name="x", when_missing=False)], 'deploy_xdp_health_gates[0] ("x").when_missing: false is not one of'),
        ([gate(name="x", each="")], 'deploy_xdp_health_gates[0] ("x").each: "" is not a word for an element'),
    ],
)
def test_a_bad_gate_is_refused_naming_index_name_field_value_and_what_was_expected(gates, message):
    assert message in refused(gates)


def test_a_bad_gate_is_refused_before_any_gate_is_evaluated_and_under_its_variables_name():
    text = refused([gate(name="fine"), gate(name="bad", max="x")], before="not even a result")
    assert text.startswith('deploy_xdp_health_gates[1] ("bad").max: "x" is not a number')
    with pytest.raises(AnsibleFilterError) as err:
        health_gates(reading(), reading(), [gate(min="x")], variable="lb_gates")
    assert str(err.value).startswith('lb_gates[0] ("g").min: "x" is not a number')


@pytest.mark.parametrize(
    "field, expression, reason",
    [
        ("query", "deployments.filter.[", "Incomplete expression at column 20"),
        (
            "query",
            "deployments..filter",
            "Expecting: ['quoted_identifier', 'unquoted_identifier', 'lbracket', 'lbrace'], got: dot: Parse error at column 12, token \".\" (DOT)",
        ),
        ("of", "deployments.'x", "Unclosed ' delimiter at column 12"),
        ("query", "sum(", "Incomplete expression at column 4"),
    ],
)
def test_a_jmespath_syntax_error_names_the_gate_the_field_and_the_expression(field, expression, reason):
    text = refused([gate(name="x", **{field: expression})])
    assert text == 'deploy_xdp_health_gates[0] ("x").%s: "%s" is not a valid JMESPath expression: %s' % (field, expression, reason)


@pytest.mark.parametrize(
    "query, message",
    [
        ("deployments.filter.counters.filter_stats.verdicts", None),
        (
            "deployments.filter.counters.filter_stats.counters",
            'deploy_xdp_health_gates[0] ("g").query: "deployments.filter.counters.filter_stats.counters" found '
            "{'bytes': 0, 'packets': 0} after the window, not a number, a list or an object of numbers (expected counters: "
            "add .packets, or sum(...) for one number)",
        ),
        ("deployments.filter.hook", 'deploy_xdp_health_gates[0] ("g").query: "deployments.filter.hook" found "xdp" after'),
        ("changed", 'deploy_xdp_health_gates[0] ("g").query: "changed" found false after the window'),
        (
            "sum(deployments.*.hook)",
            'deploy_xdp_health_gates[0] ("g").query: "sum(deployments.*.hook)" failed on the '
            "bpf_info result after the window: In function sum(), invalid type for value: xdp",
        ),
        (
            "nosuch(deployments)",
            'deploy_xdp_health_gates[0] ("g").query: "nosuch(deployments)" failed on the bpf_info result after the window: Unknown function: nosuch()',
        ),
    ],
)
def test_a_query_that_finds_no_numbers_is_a_bad_gate(query, message):
    if message is None:
        assert one(reading(), reading(passed=2), query=query, min=0)["value"] == {"pass": 2, "drop": 0}
        return
    assert refused([gate(query=query)]).startswith(message)


# ---------------------------------------------------------------- bad bpf_info results


@pytest.mark.parametrize(
    "before, after, message",
    [
        (
            "skipped",
            reading(),
            'health_gates: the bpf_info result before the window is "skipped", not a dict (expected '
            "the registered result of ebpf.fleet.bpf_info with counters: true)",
        ),
        (reading(), None, "health_gates: the bpf_info result after the window is null, not a dict"),
        (
            {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"},
            reading(),
            "health_gates: the bpf_info result before the window is a skipped task (Conditional result was False): the gates need both readings",
        ),
        (
            reading(),
            {"failed": True, "msg": "libbpf 1.x is required\nsecond line"},
            "health_gates: the bpf_info result after the window is a failed task (libbpf 1.x is required): the gates need both readings",
        ),
        (
            {"changed": False, "results": [reading()]},
            reading(),
            "health_gates: the bpf_info result before the window is a loop's result (results: [...]): register bpf_info without a loop",
        ),
        (
            {"changed": False, "query_result": 5},
            reading(),
            "health_gates: the bpf_info result before the window has no "
            "deployments (its keys: changed, query_result): expected the registered result of ebpf.fleet.bpf_info, "
            "without query",
        ),
    ],
)
def test_a_result_that_is_not_a_bpf_info_reading_is_refused_clearly(before, after, message):
    assert refused([gate()], before=before, after=after).startswith(message)
