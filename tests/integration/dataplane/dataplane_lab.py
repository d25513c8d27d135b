"""Real frames through veth pairs between test namespaces: enter a namespace, attach, send, receive.

`entered(ns)` moves the calling thread into a namespace's network namespace
(setns(2), as nsenter --net does: mounts and bpffs are untouched) and back, so
the test process can attach links by ifindex, open sockets, and run the
live-frame generator there. Links and sockets stay in the namespace they were
made in after the thread returns.
"""

import contextlib
import ctypes
import os
import socket
import threading
import time

from harness.progtest import xdp_md

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: %s" % os.strerror(err))


@contextlib.contextmanager
def entered(ns):
    """Run the body inside ns's network namespace (this thread only)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns.path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def attach(ns, prog_fd: int, ifname: str, attach_type: int) -> int:
    """A BPF link (XDP native or TCX) on ifname inside ns; close the fd to detach."""
    with entered(ns):
        ifindex = socket.if_nametoindex(ifname)
        return libbpf.link_create(prog_fd, ifindex, attach_type, flags=libbpf.XDP_FLAGS_DRV_MODE if attach_type == libbpf.ATTACH_XDP else 0)


def send_live_frames(ns, tx_prog_fd: int, ifname: str, frame: bytes, count: int) -> float:
    """Transmit count copies of frame out of ifname (to its veth peer) with an XDP_TX program run in
    BPF_F_TEST_XDP_LIVE_FRAMES mode; returns the seconds it took."""
    with entered(ns):
        ifindex = socket.if_nametoindex(ifname)
        start = time.perf_counter()
        _live_run(tx_prog_fd, frame, xdp_md(len(frame), ifindex), count)
        return time.perf_counter() - start


def _live_run(prog_fd: int, frame: bytes, ctx: bytes, count: int):
    libbpf.prog_test_run(prog_fd, frame, repeat=count, ctx=ctx, flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=64)


def packet_socket(ns, ifname: str) -> socket.socket:
    """An AF_PACKET socket receiving every frame that arrives on ifname inside ns."""
    with entered(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return sock


def udp_socket(ns, addr: str, port: int, family=socket.AF_INET) -> socket.socket:
    with entered(ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((addr, port))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket, wait: float = 0.3) -> list:
    """Everything the socket received until it has been quiet for `wait` seconds."""
    sock.settimeout(wait)
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except (TimeoutError, BlockingIOError):
            return out


class Counter(threading.Thread):
    """A user-space filter: reads a packet socket and counts the frames whose bytes match a test."""

    def __init__(self, sock: socket.socket, match):
        super().__init__(daemon=True)
        self.sock, self.match = sock, match
        self.seen = self.matched = 0
        self.first = self.last = 0.0
        self.stop = threading.Event()

    def run(self):
        self.sock.settimeout(0.2)
        recv, match = self.sock.recv, self.match
        while not self.stop.is_set():
            try:
                data = recv(2048)
            except TimeoutError:
                continue
            self.seen += 1
            self.last = time.perf_counter()
            if not self.first:
                self.first = self.last
            if match(data):
                self.matched += 1
