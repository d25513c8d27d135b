# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_exporter textfile metrics of this host's deployments (ebpf-fleet-host metrics, restore.py).

Series, read from the records (records.py) and the kernel (drift.py, the pins), nothing changed:

    ebpf_fleet_deployment_info{deployment,hook,version,sha256} 1       one per recorded deployment
    ebpf_fleet_program_info{deployment,interface,hook,mode,tag,id,version} 1
                                                                      the program running for it on each hook
    ebpf_fleet_in_sync{deployment,interface,hook} 0|1                 1 when the hook runs the recorded chain and
                                                                      the deployment's program is the recorded
                                                                      object's, at its recorded place, in its
                                                                      recorded mode (drift.py)
    ebpf_fleet_map_in_sync{deployment,map} 0|1                       1 when a map with recorded contents holds
                                                                      what bpf_map declared last (drift.py); only
                                                                      for maps of at most MAX_MAP_CHECK entries
    ebpf_fleet_chain_position{deployment,interface,hook} n           its place in the hook's chain (1 = attached)
    ebpf_fleet_packets_total{deployment,map,counter}                 counters of every map whose values are
    ebpf_fleet_bytes_total{deployment,map,counter}                   struct fleet_counter (filter_stats, lb_stats,
                                                                      egress_stats, ...), summed over CPUs; the
                                                                      counter label is the key by name
                                                                      (port_pass, syn, 2_paced)
    ebpf_fleet_scrape_error{deployment} 0|1                          1 when something could not be read

The file is written to a temporary name in the folder and renamed (node_exporter reads only *.prom files).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from ansible_collections.ebpf.fleet.plugins.module_utils.host import bpf_inventory, drift, records

HELP = {
    "ebpf_fleet_deployment_info": ("gauge", "A deployment recorded on this host (version and object checksum)."),
    "ebpf_fleet_program_info": ("gauge", "The program running for a deployment on an interface's hook."),
    "ebpf_fleet_in_sync": ("gauge", "1 when the hook runs the deployment's recorded program in its recorded chain."),
    "ebpf_fleet_map_in_sync": ("gauge", "1 when the map holds the contents last declared through bpf_map."),
    "ebpf_fleet_chain_position": ("gauge", "Place of the deployment's program in the hook's chain (1 = attached)."),
    "ebpf_fleet_packets_total": ("counter", "Packets counted by the deployment's programs, per counter key."),
    "ebpf_fleet_bytes_total": ("counter", "Bytes counted by the deployment's programs, per counter key."),
    "ebpf_fleet_scrape_error": ("gauge", "1 when some of the deployment's state could not be read."),
}
MAX_COUNTER_KEYS = bpf_inventory.MAX_COUNTER_KEYS
# maps with more declared entries get no ebpf_fleet_map_in_sync series: checking one reads and compares all of it
# (11 s for a one-million-entry hash measured on the 2-core development VM under a load average of 6), too much for
# every run of the timer; status.yml and bpf_info check_records check them all
MAX_MAP_CHECK = 65536


def escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample(name: str, labels: dict, value) -> tuple:
    return name, tuple(labels.items()), value


def hook_samples(state_dir: str, name: str, rec: dict) -> list:
    out = []
    for item in drift.hooks(state_dir, name, rec):
        labels = {"deployment": name, "interface": item["interface"], "hook": item["hook"]}
        if item["prog_id"] and item["tag"]:
            out.append(
                sample("ebpf_fleet_program_info", dict(labels, mode=item["mode"] or "", tag=item["tag"], id=item["prog_id"], version=rec.get("version", "")), 1)
            )
        out.append(sample("ebpf_fleet_in_sync", labels, int(item["in_sync"])))
        if item["position"]:
            out.append(sample("ebpf_fleet_chain_position", labels, item["position"]))
    return out


def map_samples(state_dir: str, name: str, rec: dict) -> list:
    return [
        sample("ebpf_fleet_map_in_sync", {"deployment": name, "map": item["map"]}, int(item["in_sync"]))
        for item in drift.maps(state_dir, name, drift.pin_root_of(rec), MAX_MAP_CHECK)
    ]


def counter_samples(state_dir: str, name: str, rec: dict) -> list:
    out = []
    found = bpf_inventory.counters(drift.pin_root_of(rec), state_dir, name, MAX_COUNTER_KEYS)
    for map_name, item in sorted(found.items()):
        for counter, value in item["counters"].items():
            labels = {"deployment": name, "map": map_name, "counter": counter}
            out.append(sample("ebpf_fleet_packets_total", labels, value["packets"]))
            out.append(sample("ebpf_fleet_bytes_total", labels, value["bytes"]))
    return out


def collect(state_dir: str) -> tuple:
    """(samples, names of deployments that could not be read fully)."""
    samples, failed = [], []
    for name in records.list_deployments(state_dir):
        error = 0
        try:
            rec = records.read_deployment(state_dir, name) or {}
        except records.RecordError:
            rec, error = {}, 1
        if rec:
            samples.append(
                sample(
                    "ebpf_fleet_deployment_info",
                    {"deployment": name, "hook": rec.get("hook", ""), "version": rec.get("version", ""), "sha256": str(rec.get("object_sha256", ""))[:12]},
                    1,
                )
            )
            for part in (hook_samples, map_samples, counter_samples):
                try:
                    samples += part(state_dir, name, rec)
                except Exception:  # pylint: disable=broad-except  # one deployment's error spoils no other's
                    error = 1
        samples.append(sample("ebpf_fleet_scrape_error", {"deployment": name}, error))
        if error:
            failed.append(name)
    return samples, failed


def render(samples: list) -> str:
    lines = []
    for metric, (kind, text) in HELP.items():
        mine = [s for s in samples if s[0] == metric]
        if not mine:
            continue
        lines.append("# HELP %s %s" % (metric, text))
        lines.append("# TYPE %s %s" % (metric, kind))
        for _name, labels, value in mine:
            lines.append("%s{%s} %s" % (metric, ",".join('%s="%s"' % (k, escape(v)) for k, v in labels), value))
    return "\n".join(lines) + "\n"


def write_textfile(state_dir: str, folder: str, filename: str = "ebpf_fleet.prom") -> tuple:
    """Write the metrics atomically into folder; (path, deployments that could not be read fully)."""
    samples, failed = collect(state_dir)
    data = render(samples).encode()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, filename)
    fd, tmp = tempfile.mkstemp(prefix="." + filename + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # node_exporter reads it
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path, failed
