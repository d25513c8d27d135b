"""Run a systemd unit's command as systemd would on a host without systemd, and read what it wrote.

These machines have no systemd (PID 1 is not systemd): a test reads the unit file, builds the environment its
Environment= and EnvironmentFile= lines give, and runs its ExecStart inside a lab namespace with nsenter --net
(only the network namespace changes, as at boot on a real host). Used for the repository's units
(extras/host/systemd, test_restore.py) and for the units the bpf_host role installs (test_role_bpf_host.py).
"""

import os
import shlex
import subprocess

from . import paths

SYSTEM_PYTHON = "/usr/bin/python3"
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def unit_lines(unit_path: str) -> list:
    """(key, value) of every setting line of a unit file, in order (sections are not told apart)."""
    out = []
    with open(unit_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, value = line.split("=", 1)
                out.append((key.strip(), value.strip()))
    return out


def exec_start(unit_path: str) -> list:
    """The unit's one ExecStart as an argument list."""
    lines = [value for key, value in unit_lines(unit_path) if key == "ExecStart"]
    assert len(lines) == 1, (unit_path, lines)
    return shlex.split(lines[0])


def read_environment_file(path: str) -> dict:
    """KEY=VALUE lines of an EnvironmentFile (comments and blank lines skipped, one level of quotes removed)."""
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith(("#", ";")) or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def unit_environment(unit_path: str) -> dict:
    """What Environment= and EnvironmentFile= give the unit's command, in systemd's order (files win)."""
    env, files = {}, []
    for key, value in unit_lines(unit_path):
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _sep, val = assignment.partition("=")
                env[name] = val
        elif key == "EnvironmentFile":
            files.append(value)
    for value in files:
        optional = value.startswith("-")
        path = value[1:] if optional else value
        if optional and not os.path.exists(path):
            continue
        env.update(read_environment_file(path))
    return env


def system_python() -> str:
    """The Python a host runs the command with: the system one (no Ansible there), else the test venv's."""
    return SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else paths.PYTHON


def run_in_netns(argv: list, netns, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """argv inside the lab namespace (nsenter --net), with only env and a basic PATH."""
    name = netns if isinstance(netns, str) else netns.name
    full_env = dict(BASE_ENV)
    full_env.update(env)
    return subprocess.run(["nsenter", "--net=/run/netns/%s" % name] + list(argv), env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def run_unit(unit_path: str, netns, env: dict = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The unit's ExecStart, run as the unit would: its own environment, then env (tests' overrides)."""
    full_env = unit_environment(unit_path)
    full_env.update(env or {})
    return run_in_netns(exec_start(unit_path), netns, full_env, timeout=timeout)


def parse_metrics(path) -> dict:
    """{(sample name, sorted labels): value}, through prometheus_client's text parser."""
    from prometheus_client import parser  # pylint: disable=import-outside-toplevel

    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for item in family.samples:
            key = (item.name, tuple(sorted(item.labels.items())))
            assert key not in out, key
            out[key] = item.value
    return out
