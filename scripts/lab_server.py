# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab backends' web server: answers every TCP connection on PORT with NAME and closes it.

    lab_server.py NAME PORT

It listens on every address, so it serves the load balancer's VIP once the VIP is on the host (the
ebpf.fleet.lb_backend role puts it on lo). scripts/lab.sh starts one per backend and stops it. Standard library only.
"""

import socket
import sys


def main() -> int:
    name, port = sys.argv[1], int(sys.argv[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen(128)
        while True:
            conn, _peer = server.accept()
            with conn:
                try:
                    conn.sendall(name.encode() + b"\n")
                except OSError:
                    pass


if __name__ == "__main__":
    sys.exit(main())
