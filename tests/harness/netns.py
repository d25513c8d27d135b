"""Network namespaces and links that tests create, own and always remove.

Every name carries a per-run prefix, so the harness can tell its objects from
anything else on the machine and never touches an interface it did not make.
Traffic only flows inside these namespaces.
"""

import itertools
import json
import os
import subprocess
import uuid

PREFIX = "ebft"
RUN_ID = uuid.uuid4().hex[:6]
_counter = itertools.count()


def unique(kind: str) -> str:
    """A name unique to this run: ebft<run><n><kind>, within IFNAMSIZ for short kinds."""
    return "%s%s%d%s" % (PREFIX, RUN_ID, next(_counter), kind)


def ip(*args, netns=None, check=True):
    cmd = ["ip"]
    if netns:
        cmd += ["-n", netns]
    cmd += list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def in_netns(netns, cmd, check=True, **kwargs):
    """Run cmd (a list) inside netns, changing only the network namespace (bpffs stays visible)."""
    full = ["nsenter", "--net=/run/netns/%s" % netns] + list(cmd) if netns else list(cmd)
    return subprocess.run(full, check=check, capture_output=True, text=True, **kwargs)


class Netns:
    """One network namespace with helpers to add links inside it."""

    def __init__(self, name: str):
        self.name = name
        self.path = "/run/netns/%s" % name

    def __repr__(self):
        return "Netns(%s)" % self.name

    def ip(self, *args, check=True):
        return ip(*args, netns=self.name, check=check)

    def run(self, cmd, check=True, **kwargs):
        return in_netns(self.name, cmd, check=check, **kwargs)

    def up(self, ifname: str):
        self.ip("link", "set", ifname, "up")

    def veth(self, name_a="va", name_b="vb", peer_ns=None, addr_a=None, addr_b=None):
        """A veth pair: name_a here, name_b here or in peer_ns; both up."""
        self.ip("link", "add", name_a, "type", "veth", "peer", "name", name_b)
        if peer_ns is not None:
            self.ip("link", "set", name_b, "netns", peer_ns.name)
        other = peer_ns or self
        if addr_a:
            self.ip("addr", "add", addr_a, "dev", name_a)
        if addr_b:
            other.ip("addr", "add", addr_b, "dev", name_b)
        self.up(name_a)
        other.up(name_b)
        return name_a, name_b

    def bridge(self, name="br0", ports=()):
        self.ip("link", "add", name, "type", "bridge")
        for port in ports:
            self.ip("link", "set", port, "master", name)
        self.up(name)
        return name

    def plug_lb_host(self, ns, ifname: str, mac: str, addr: str, port: str, xdp_object: str, bridge: str = "br0"):
        """A host of a load-balancer lab: veth ifname (mac, addr/24) in ns, its peer `port` on this namespace's
        bridge; native veth XDP_TX towards the port needs an XDP program there, so xdp_object (section xdp) runs
        on it."""
        self.ip("link", "add", port, "type", "veth", "peer", "name", ifname)
        self.ip("link", "set", ifname, "netns", ns.name)
        self.ip("link", "set", port, "master", bridge)
        self.up(port)
        ns.ip("link", "set", ifname, "address", mac)
        ns.ip("addr", "add", addr + "/24", "dev", ifname)
        ns.up(ifname)
        self.ip("link", "set", "dev", port, "xdpdrv", "obj", xdp_object, "sec", "xdp")
        return port

    def macvlan(self, name="mv0", parent="va", mode="bridge"):
        self.ip("link", "add", name, "link", parent, "type", "macvlan", "mode", mode)
        self.up(name)
        return name

    def tun(self, name="tun0"):
        self.ip("tuntap", "add", "dev", name, "mode", "tun")
        self.up(name)
        return name

    def dummy(self, name="dum0"):
        self.ip("link", "add", name, "type", "dummy")
        self.up(name)
        return name

    def ifindex(self, ifname: str) -> int:
        res = self.ip("-j", "link", "show", ifname)
        return json.loads(res.stdout)[0]["ifindex"]

    def links(self):
        return json.loads(self.ip("-j", "-d", "link", "show").stdout)


class NetnsFactory:
    """Creates namespaces on demand; delete_all() removes every one it made."""

    def __init__(self):
        self.created = []

    def __call__(self, tag: str = "") -> Netns:
        name = unique(tag or "n")
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        ns = Netns(name)
        self.created.append(ns)
        ns.up("lo")
        return ns

    def delete_all(self):
        errors = []
        for ns in reversed(self.created):
            res = subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, text=True, check=False)
            if res.returncode != 0 and os.path.exists(ns.path):
                errors.append("%s: %s" % (ns.name, res.stderr.strip()))
        self.created = []
        return errors


def leftover_namespaces():
    """Namespaces from this run that still exist (should be none)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith(PREFIX + RUN_ID)]
