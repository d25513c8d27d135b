# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What `ethtool -i` and `ethtool -l` show: driver information and channel counts.

pyroute2 0.7.12 offers neither ETHTOOL_GDRVINFO nor ETHTOOL_GCHANNELS, so
this module issues the two SIOCETHTOOL ioctls itself on an AF_INET datagram
socket of the calling process's network namespace. Both are read-only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_GCHANNELS = 0x0000003C
IFNAMSIZ = 16


class EthtoolDrvinfo(ctypes.Structure):
    """struct ethtool_drvinfo (linux/ethtool.h)."""

    _fields_ = [
        ("cmd", ctypes.c_uint32),
        ("driver", ctypes.c_char * 32),
        ("version", ctypes.c_char * 32),
        ("fw_version", ctypes.c_char * 32),
        ("bus_info", ctypes.c_char * 32),
        ("erom_version", ctypes.c_char * 32),
        ("reserved2", ctypes.c_char * 12),
        ("n_priv_flags", ctypes.c_uint32),
        ("n_stats", ctypes.c_uint32),
        ("testinfo_len", ctypes.c_uint32),
        ("eedump_len", ctypes.c_uint32),
        ("regdump_len", ctypes.c_uint32),
    ]


class EthtoolChannels(ctypes.Structure):
    """struct ethtool_channels (linux/ethtool.h)."""

    _fields_ = [
        ("cmd", ctypes.c_uint32),
        ("max_rx", ctypes.c_uint32),
        ("max_tx", ctypes.c_uint32),
        ("max_other", ctypes.c_uint32),
        ("max_combined", ctypes.c_uint32),
        ("rx_count", ctypes.c_uint32),
        ("tx_count", ctypes.c_uint32),
        ("other_count", ctypes.c_uint32),
        ("combined_count", ctypes.c_uint32),
    ]


class IfreqData(ctypes.Structure):
    """struct ifreq with ifr_data (the pointer member of its union)."""

    _fields_ = [("ifr_name", ctypes.c_char * IFNAMSIZ), ("ifr_data", ctypes.c_void_p), ("pad", ctypes.c_char * 16)]


def _text(raw: bytes) -> str:
    value = raw.decode(errors="replace").strip()
    return "" if value in ("N/A", "") else value


def _ethtool(ifname: str, struct) -> bool:
    """Run one SIOCETHTOOL get; False when the device has no handler for it (EOPNOTSUPP)."""
    req = IfreqData()
    req.ifr_name = ifname.encode()[: IFNAMSIZ - 1]
    req.ifr_data = ctypes.addressof(struct)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                return False
            raise
    return True


def parse_drvinfo(info: EthtoolDrvinfo) -> dict:
    """driver, version, firmware, bus_info from an ethtool_drvinfo; empty or 'N/A' become ''."""
    return {
        "driver": _text(info.driver),
        "version": _text(info.version),
        "firmware": _text(info.fw_version),
        "bus_info": _text(info.bus_info),
    }


def drvinfo(ifname: str) -> dict:
    """ETHTOOL_GDRVINFO: {'driver', 'version', 'firmware', 'bus_info'} ('' where absent).

    Raises OSError (ENODEV) for an interface that does not exist.
    """
    info = EthtoolDrvinfo(cmd=ETHTOOL_GDRVINFO)
    if not _ethtool(ifname, info):
        return {"driver": "", "version": "", "firmware": "", "bus_info": ""}
    return parse_drvinfo(info)


def parse_channels(chan: EthtoolChannels) -> dict:
    return {
        "rx": chan.rx_count,
        "tx": chan.tx_count,
        "other": chan.other_count,
        "combined": chan.combined_count,
        "max_rx": chan.max_rx,
        "max_tx": chan.max_tx,
        "max_other": chan.max_other,
        "max_combined": chan.max_combined,
    }


def channels(ifname: str):
    """ETHTOOL_GCHANNELS: current and maximum rx/tx/other/combined counts, or None when unsupported."""
    chan = EthtoolChannels(cmd=ETHTOOL_GCHANNELS)
    if not _ethtool(ifname, chan):
        return None
    return parse_channels(chan)
