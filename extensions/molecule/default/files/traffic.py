"""Send the scenario's test traffic to the VM's data NIC from inside its network namespace; print what got through.

Run in the namespace (ip netns exec ebfm... python3 traffic.py TARGET SOURCE BLOCKED_SOURCE): ICMP echo from SOURCE
(the filter passes it), from BLOCKED_SOURCE (a source rule drops it), UDP to port 53 (a port rule drops it) and
to port 54 (passed: the VM answers with ICMP port unreachable, seen as a refused connection). Prints one JSON
object, {check: true when the traffic reached the VM}.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "files"))
from probes import udp_reached  # noqa: E402 pylint: disable=wrong-import-position


def ping(target: str, source: str) -> bool:
    """True when an echo request from source got its reply."""
    done = subprocess.run(["ping", "-n", "-q", "-c", "3", "-i", "0.3", "-W", "2", "-I", source, target], capture_output=True, check=False)
    return done.returncode == 0


def main() -> None:
    target, source, blocked = sys.argv[1:4]
    print(
        json.dumps(
            {
                "ping_from_allowed_source": ping(target, source),
                "ping_from_dropped_source": ping(target, blocked),
                "udp_53_dropped_port": udp_reached(target, source, 53),
                "udp_54_open_port": udp_reached(target, source, 54),
            }
        )
    )


if __name__ == "__main__":
    main()
