"""Run a module of the collection the way Ansible does: a separate process, JSON in, JSON out.

The module runs under the test venv's Python with the collection importable as
ansible_collections.ebpf.fleet, optionally inside a network namespace (only the
network namespace changes, so bpffs pins stay visible).
"""

import json
import os
import subprocess
import tempfile

from . import paths


class ModuleResult(dict):
    """The module's JSON result, with the raw process output for failure messages."""

    @property
    def failed(self) -> bool:
        return bool(self.get("failed"))

    @property
    def changed(self) -> bool:
        return bool(self.get("changed"))


def module_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = paths.COLLECTIONS + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["LC_ALL"] = "C.UTF-8"
    return env


def run_module(module: str, args: dict, netns=None, check_mode=False, diff=False, timeout=300, python=None) -> ModuleResult:
    """Run ebpf.fleet.<module> with args; returns its result (failed results are returned, not raised)."""
    payload = dict(args)
    payload["_ansible_check_mode"] = check_mode
    payload["_ansible_diff"] = diff
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_path = handle.name
    cmd = [python or paths.PYTHON, "-m", "ansible_collections.ebpf.fleet.plugins.modules.%s" % module, args_path]
    if netns is not None:
        name = netns if isinstance(netns, str) else netns.name
        cmd = ["nsenter", "--net=/run/netns/%s" % name] + cmd
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=module_env(), cwd=paths.REPO, check=False)
    finally:
        os.unlink(args_path)
    out = proc.stdout.strip()
    try:
        # a module prints exactly one JSON document; tolerate noise before it
        start = out.index("{")
        result = json.loads(out[start:])
    except ValueError:
        result = {"failed": True, "msg": "module printed no JSON", "rc": proc.returncode}
    result = ModuleResult(result)
    result["_stdout"] = proc.stdout
    result["_stderr"] = proc.stderr
    return result


def playbook_command(playbook: str, inventory: str = None, extra_vars: dict = None, check=False, diff=False) -> list:
    """The ansible-playbook command line of the venv: inventory (localhost with the local connection when None),
    extra vars as JSON, --check, --diff."""
    cmd = [os.path.join(os.path.dirname(paths.PYTHON), "ansible-playbook"), playbook]
    if inventory is None:
        cmd += ["-i", "localhost,", "-c", "local"]
    else:
        cmd += ["-i", inventory]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    return cmd


def playbook_env(env: dict = None) -> dict:
    """The environment ansible-playbook runs with: the collection on its collections path, the venv's Python."""
    run_env = module_env()
    run_env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": paths.COLLECTIONS,
            "ANSIBLE_PYTHON_INTERPRETER": paths.PYTHON,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": tempfile.gettempdir(),
        }
    )
    run_env.update(env or {})
    return run_env


def run_playbook(playbook: str, inventory: str = None, extra_vars: dict = None, check=False, diff=False, timeout=600, env=None) -> subprocess.CompletedProcess:
    """ansible-playbook with the collection on its collections path."""
    return subprocess.run(
        playbook_command(playbook, inventory, extra_vars, check, diff), capture_output=True, text=True, timeout=timeout, env=playbook_env(env), check=False
    )
