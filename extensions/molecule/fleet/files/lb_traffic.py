"""Send the fleet scenario's test traffic from inside its network namespace; print what came back, as one JSON object.

Run in the namespace: ip netns exec ebfm... python3 lb_traffic.py VIP SOURCE BLOCKED_SOURCE BCC_HOST
- `spread`: CONNECTIONS new TCP connections from SOURCE to VIP:80, each a new 5-tuple that pays the load
  balancer's connection-table insert; each backend answers GET / with its own name, counted per name;
- `big`: a few connections that each fetch a 1 MiB file (hundreds of segments of one flow, which must all reach
  the backend that took the SYN): the bytes received per connection;
- `blocked`: a connection from BLOCKED_SOURCE, which the filter in front of the load balancer drops (true if it
  got through);
- `bcc_port_9999`, `bcc_port_9998`: UDP to BCC_HOST, whose bcc-compiled XDP program drops port 9999 (true when the
  host's kernel saw the datagram and refused it).
"""

import json
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "files"))
from probes import udp_reached  # noqa: E402 pylint: disable=wrong-import-position

CONNECTIONS = 48
BIG = 4


def http_get(vip: str, source: str, path: str, timeout: float = 10.0) -> bytes:
    """The body of GET path over a new connection from source (HTTP/1.0: the server closes when done)."""
    with socket.create_connection((vip, 80), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(b"GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path.encode(), vip.encode()))
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _blank, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise OSError("unexpected answer: %r" % head[:80])
    return body


def main() -> None:
    vip, source, blocked, bcc_host = sys.argv[1:5]
    spread: dict = {}
    errors = []
    for _connection in range(CONNECTIONS):
        try:
            name = http_get(vip, source, "/").decode().strip()
        except OSError as exc:
            name = "error"
            errors.append(str(exc))
        spread[name] = spread.get(name, 0) + 1
    big = []
    for _download in range(BIG):
        try:
            big.append(len(http_get(vip, source, "/big.bin", timeout=60.0)))
        except OSError as exc:
            big.append(0)
            errors.append(str(exc))
    try:
        http_get(vip, blocked, "/", timeout=3.0)
        passed = True
    except OSError:
        passed = False
    print(
        json.dumps(
            {
                "spread": spread,
                "big": big,
                "blocked": passed,
                "bcc_port_9999": udp_reached(bcc_host, source, 9999),
                "bcc_port_9998": udp_reached(bcc_host, source, 9998),
                "errors": errors[:5],
            }
        )
    )


if __name__ == "__main__":
    main()
