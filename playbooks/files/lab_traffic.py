# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Send the lab's test traffic from one lab host to others; print what answered, as JSON.

    python3 lab_traffic.py '{"targets": {"edge1": "198.51.100.11"}, "count": 2, "timeout": 0.3,
                             "cases": [{"name": "web", "src": "198.51.100.33", "proto": "tcp", "port": 80}]}'

Each case makes `count` attempts from its source address: a TCP connect (one SYN: the timeout is
shorter than the first retransmission) or a UDP datagram. An attempt is *answered* when the edge's
kernel replied (a connection, a refusal, or an ICMP port unreachable), which only happens when the
filter passed the packet; a dropped packet gets no answer.

    python3 lab_traffic.py '{"dst": "203.0.113.10", "port": 80, "src": "198.51.100.33", "sports": [20001, 20002]}'

opens one TCP connection per source port and prints what each server answered (the lab backends answer their
name), so the load balancer's choice for each flow can be compared with Maglev's. Standard library only.
"""

import errno
import json
import socket
import sys
import threading


def attempt(case: dict, dst: str, timeout: float) -> bool:
    kind = socket.SOCK_STREAM if case["proto"] == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((case["src"], 0))
        sock.settimeout(timeout)
        if kind == socket.SOCK_STREAM:
            try:
                return sock.connect_ex((dst, int(case["port"]))) in (0, errno.ECONNREFUSED)
            except TimeoutError:
                return False
        sock.connect((dst, int(case["port"])))
        try:
            sock.send(b"ebpf.fleet lab")
            sock.recv(64)
            return True
        except ConnectionRefusedError:
            return True
        except OSError:  # a timeout, or the datagram dropped on its way out (egress ACL: ENOBUFS, EPERM)
            return False


def connections(spec: dict) -> dict:
    """TCP connections to spec["dst"]:spec["port"] from spec["src"], one per source port in spec["sports"]; each
    reads the server's first line (the lab backends answer their name). {sport: answer or "error: ..."}."""
    out = {}
    for sport in spec["sports"]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.settimeout(float(spec.get("timeout", 3)))
            try:
                sock.bind((spec["src"], int(sport)))
                sock.connect((spec["dst"], int(spec["port"])))
                out[str(sport)] = sock.recv(64).decode().strip()
            except OSError as exc:
                out[str(sport)] = "error: %s" % exc
    return out


def run(spec: dict) -> dict:
    count, timeout = int(spec.get("count", 2)), float(spec.get("timeout", 0.3))
    results = {host: {} for host in spec["targets"]}
    lock = threading.Lock()

    def one(host, dst, case):
        answered = sum(1 for _n in range(count) if attempt(case, dst, timeout))
        with lock:
            results[host][case["name"]] = {"sent": count, "answered": answered}

    threads = [threading.Thread(target=one, args=(host, dst, case)) for host, dst in spec["targets"].items() for case in spec["cases"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


if __name__ == "__main__":
    SPEC = json.loads(sys.argv[1])
    print(json.dumps(connections(SPEC) if "sports" in SPEC else run(SPEC), sort_keys=True))
