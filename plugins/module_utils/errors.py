# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error type for the collection, and the one place where a module turns errors into fail_json.

Every error class of module_utils derives from FleetError (keeping its own name and its older base, such as
ValueError or OSError, so existing ``except`` clauses still work). A FleetError carries the operator-facing
message and its details: the field, the value and what was expected, and extra result keys (a verifier log,
the number of entries applied).

A module's main() runs its body inside ``failing(module)``:

* a FleetError becomes ``fail_json(msg=..., **details)``;
* an OSError or a netlink error that reached the module without context becomes a short message naming the
  file or the error number;
* anything else becomes ``fail_json`` with a short message and the exception's type, never a traceback
  (Ansible adds the traceback itself at -vvv).

Code at a kernel boundary (attach, clsact, pins, the bpffs mount) wraps the call in ``converting(...)``, which
turns an OSError or a netlink error into a FleetError naming the object, the interface or the path and what to
do about it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import reprlib
import sys

NETLINK_EXCEPTIONS_MODULE = "pyroute2.netlink.exceptions"

# Longest value (repr) and message an error carries: a hostile value (a huge string, a deep structure) must not
# make the module's answer, or its memory, grow with it.
VALUE_MAX = 200
MESSAGE_MAX = 4000


def netlink_errors() -> tuple:
    """pyroute2's NetlinkError once pyroute2 is loaded (only it raises one), else (): importing pyroute2 here
    would cost every module's start, those that never speak netlink too."""
    module = sys.modules.get(NETLINK_EXCEPTIONS_MODULE)
    return (module.NetlinkError,) if module is not None else ()


def short_repr(value, limit: int = VALUE_MAX) -> str:
    """repr(value) for an error message: at most about limit characters, in bounded time and memory whatever
    value is (a huge string, a deeply nested or alias-expanded structure); a whole value is never rendered."""
    shortener = reprlib.Repr()
    shortener.maxlevel = 3
    shortener.maxstring = shortener.maxother = min(limit, 120)
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 10
    shortener.maxfrozenset = shortener.maxdeque = shortener.maxarray = 10
    shortener.maxlong = 40
    try:
        text = shortener.repr(value)
    except (RecursionError, ValueError, TypeError):
        text = "<%s>" % type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded(text: str, limit: int = MESSAGE_MAX) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "... (message cut at %d characters)" % limit


class FleetError(Exception):
    """The collection's error: an operator-facing message and its details.

    FleetError("name='a.b' is not a valid name", field="name", value="a.b", expected="...", extra_key=...).
    Positional arguments go to the exception's own base unchanged (OSError subclasses keep errno, strerror).
    Subclasses name attributes that become result keys in RESULT_ATTRS, e.g. {"verifier_log": "log"}.
    """

    RESULT_ATTRS: dict = {}

    def __init__(self, *args, field=None, value=None, expected=None, **extra):
        super().__init__(*args)
        self.field = field
        self.value = value
        self.expected = expected
        self.extra = extra

    @property
    def message(self) -> str:
        return str(self)

    def result(self) -> dict:
        """The keys of the module's failed result: msg, the details, the extra result keys."""
        out = {"msg": bounded(self.message)}
        if self.field is not None:
            out["field"] = self.field
            out["value"] = self.value if _plain(self.value) else short_repr(self.value)
        if self.expected is not None:
            out["expected"] = self.expected
        for key, attr in self.RESULT_ATTRS.items():
            value = getattr(self, attr, None)
            if value is not None and value != "":
                out[key] = value
        out.update(self.extra)
        return out


class InputError(FleetError, ValueError):
    """Bad input from the operator (a name, a path, an option), found before anything changes."""


class KernelError(FleetError, OSError):
    """A refusal by the kernel at a known boundary, with what was being done and what to do about it."""

    def __init__(self, message: str, err: int = 0, **details):
        super().__init__(err, message, **details)
        self.errno_name = errno.errorcode.get(err, "") if err else ""

    def __str__(self) -> str:
        return str(self.strerror or "")


def _plain(value) -> bool:
    if isinstance(value, str):
        return len(value) <= VALUE_MAX
    return value is None or isinstance(value, (bool, int, float))


def error_number(exc: BaseException) -> int:
    """The errno of an OSError or the code of a netlink error (0 when there is none)."""
    if isinstance(exc, OSError):
        return exc.errno or 0
    code = getattr(exc, "code", 0)
    return code if isinstance(code, int) else 0


def describe_os_error(exc: BaseException) -> str:
    """'Device or resource busy (EBUSY)' for an OSError or a netlink error."""
    err = error_number(exc)
    if err:
        text = os.strerror(err)
        if isinstance(exc, OSError) and exc.strerror and exc.strerror != text:
            text = exc.strerror  # a BpfError's message names the libbpf call
        return "%s (%s)" % (text, errno.errorcode.get(err, "errno %d" % err))
    return bounded(str(exc) or type(exc).__name__, VALUE_MAX)


HINTS = {
    errno.EBUSY: "another program or tool holds it; detach or remove that first",
    errno.EEXIST: "something not created by ebpf.fleet is in the way; remove it first",
    errno.EPERM: "run the task as root (become: true), with CAP_BPF and CAP_NET_ADMIN",
    errno.EACCES: "run the task as root (become: true)",
    errno.ENOSPC: "the kernel ran out of room (rlimit or map size); free some or raise the limit",
    errno.ENOMEM: "the kernel ran out of memory for it (check ulimit -l and memlock limits)",
    errno.EISDIR: "a folder is in the way; remove it",
    errno.ENOTDIR: "a file is in the way where a folder should be; remove it",
    errno.EROFS: "the file system is read-only; pick a writable one",
    errno.ENODEV: "the interface went away; check that it exists",
}


@contextlib.contextmanager
def converting(what: str, hint="", **details):
    """Turn an OSError or netlink error raised by the kernel layer inside the block into a KernelError.

    what names the step, the object and the interface or path ("attaching program p to xdp@eth0"); hint says
    what to do: a text, or a dict {errno: text}; HINTS gives the default per error number. FleetErrors that are not OSErrors (they carry a
    message already) pass unchanged.
    """
    try:
        yield
    except FleetError as exc:
        if not isinstance(exc, OSError) or isinstance(exc, KernelError):
            raise
        raise _kernel_error(what, exc, hint, details) from exc
    except (OSError,) + netlink_errors() as exc:
        raise _kernel_error(what, exc, hint, details) from exc


def _kernel_error(what: str, exc: BaseException, hint: str, details: dict) -> KernelError:
    err = error_number(exc)
    if isinstance(hint, dict):
        hint = hint.get(err, "")
    hint = hint or HINTS.get(err, "")
    message = "%s failed: %s" % (what, describe_os_error(exc))
    if hint:
        message += "; %s" % hint
    log = getattr(exc, "log", "")
    if log:
        details.setdefault("verifier_log", log)
    return KernelError(message, err, **details)


def unexpected(exc: BaseException) -> dict:
    """The failed result for an exception no code turned into a FleetError: short, with the exception's type."""
    kind = type(exc).__name__
    if isinstance(exc, (OSError,) + netlink_errors()):
        where = getattr(exc, "filename", None)
        msg = "the kernel or the file system refused an operation%s: %s (%s)" % (" on %s" % where if where else "", describe_os_error(exc), kind)
        hint = HINTS.get(error_number(exc))
        if hint:
            msg += "; %s" % hint
    else:
        msg = "unexpected error (%s): %s; this is a bug of ebpf.fleet: run with -vvv for the traceback and report it" % (
            kind,
            bounded(str(exc), VALUE_MAX) or "no message",
        )
    return {"msg": msg, "exception_type": kind}


@contextlib.contextmanager
def failing(module, **always):
    """The module boundary: every error raised in the block ends in module.fail_json, never in a traceback.

    always: result keys added to every failure (e.g. changed=False). SystemExit (exit_json, fail_json) and
    KeyboardInterrupt pass through.
    """
    try:
        yield
    except FleetError as exc:
        result = dict(always)
        result.update(exc.result())
        module.fail_json(**result)
    except Exception as exc:  # pylint: disable=broad-except
        result = dict(always)
        result.update(unexpected(exc))
        module.fail_json(**result)
