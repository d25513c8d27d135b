"""Probes the scenarios' traffic scripts share (default/files/traffic.py, fleet/files/lb_traffic.py)."""

import socket


def udp_reached(target: str, source: str, port: int) -> bool:
    """True when the target's kernel saw the datagram (nothing listens: it refuses it), False when nothing came back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.connect((target, port))
        sock.settimeout(1.0)
        for _attempt in range(3):
            try:
                sock.send(b"ebpf.fleet molecule")
                sock.recv(64)
            except ConnectionRefusedError:
                return True
            except TimeoutError:
                continue
    return False
