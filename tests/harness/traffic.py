"""UDP traffic between namespaces for tests: a receiver that counts, a sender that keeps sending.

Both run as Python subprocesses inside a namespace (nsenter --net), with plain
UDP sockets: what the receiver counts is what passed every XDP/TC program.
"""

import signal
import subprocess
import sys
import time

RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.2)
print("ready", flush=True)
count, deadline = 0, time.time() + float(sys.argv[2])
try:
    while time.time() < deadline:
        try:
            s.recv(2048)
            count += 1
        except socket.timeout:
            pass
except KeyboardInterrupt:
    pass
print(count, flush=True)
"""

SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sent, deadline = 0, time.time() + duration
try:
    while time.time() < deadline:
        try:
            s.sendto(b"x" * 64, (dst, port))
            sent += 1
        except OSError:
            time.sleep(0.001)
        if sent % 200 == 0:
            time.sleep(0.0005)
except KeyboardInterrupt:
    pass
print(sent, flush=True)
"""


def _sigint_default():
    # stop() ends the sender and the receiver with SIGINT; a parent that ignores it (a pytest-xdist worker, a
    # shell's background job) would pass the ignoring on, and Python keeps an ignored SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(netns, code, *args):
    return subprocess.Popen(
        ["nsenter", "--net=/run/netns/%s" % netns.name, sys.executable, "-c", code] + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )


class UdpFlow:
    """receiver in rx_ns counts datagrams to port; sender in tx_ns sends to dst:port for duration seconds."""

    def __init__(self, tx_ns, rx_ns, dst: str, port: int, duration: float):
        self.receiver = _popen(rx_ns, RECEIVER, port, duration + 1.5)
        assert self.receiver.stdout.readline().strip() == "ready"
        self.sender = _popen(tx_ns, SENDER, dst, port, duration)
        self.started = time.time()

    def stop(self):
        """Stop the sender, let the receiver drain, then stop it; returns (sent, received)."""
        self.sender.send_signal(signal.SIGINT)
        sent_out, _err = self.sender.communicate(timeout=60)
        time.sleep(0.5)
        self.receiver.send_signal(signal.SIGINT)
        recv_out, _err = self.receiver.communicate(timeout=60)
        return int(sent_out.split()[-1]), int(recv_out.split()[-1])

    def result(self):
        """(sent, received)."""
        sent_out, sent_err = self.sender.communicate(timeout=120)
        recv_out, recv_err = self.receiver.communicate(timeout=120)
        assert self.sender.returncode == 0, sent_err
        assert self.receiver.returncode == 0, recv_err
        return int(sent_out.split()[-1]), int(recv_out.split()[-1])


def udp_count(tx_ns, rx_ns, dst: str, port: int, duration: float = 0.5):
    """Send for duration; returns (sent, received)."""
    return UdpFlow(tx_ns, rx_ns, dst, port, duration).result()
