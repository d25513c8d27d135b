"""The execution environment: ansible-builder finds the collection's dependencies, and execution-environment.yml
makes a build context that installs the collection from its Galaxy tarball.

The image itself is not built here: building needs a container runtime and a base image pulled from a
registry, and this machine reaches only package registries. These tests stop at what ansible-builder writes
before the runtime takes over (`ansible-builder create`), and run the builder stage's own introspection script
from that context on the installed collection, which is what the image build would do next.
"""

import os
import shutil
import subprocess
import tarfile

import pytest
import yaml
from bindep.depends import Depends
from harness import paths

BIN = os.path.dirname(paths.PYTHON)
with open(os.path.join(paths.REPO, "galaxy.yml"), encoding="utf-8") as _galaxy:
    GALAXY = yaml.safe_load(_galaxy)
TARBALL = "%s-%s-%s.tar.gz" % (GALAXY["namespace"], GALAXY["name"], GALAXY["version"])
PYTHON_DEPS = {"jmespath", "pyroute2"}
DEBIAN_PACKAGES = {"clang", "llvm", "libbpf-dev", "linux-libc-dev"}
RHEL_PACKAGES = {"clang", "llvm", "libbpf-devel", "kernel-headers"}


def run(*cmd, cwd=None, env=None):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, env=env, check=False, timeout=120)
    assert proc.returncode == 0, "%s failed (rc %d): %s" % (" ".join(cmd), proc.returncode, proc.stdout + proc.stderr)
    return proc.stdout


def names(requirement_lines) -> set:
    """'pyroute2>=0.7.12  # from collection ebpf.fleet' -> 'pyroute2'; 'libbpf-dev [platform:dpkg]' -> 'libbpf-dev'."""
    out = set()
    for line in requirement_lines:
        out.add(line.split("#")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip())
    return out


def introspect(folder) -> dict:
    text = run(os.path.join(BIN, "ansible-builder"), "introspect", str(folder))
    return yaml.safe_load(text[text.index("---") :])


@pytest.fixture(scope="module")
def ee_dir(tmp_path_factory):
    """A copy of execution-environment.yml beside build/dist/<the collection's tarball>, as `make build-collection`
    leaves them in a checkout."""
    root = tmp_path_factory.mktemp("ee")
    dist = root / "build" / "dist"
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(dist), paths.REPO)
    assert (dist / TARBALL).is_file(), sorted(os.listdir(dist))
    shutil.copy(os.path.join(paths.REPO, "execution-environment.yml"), root / "execution-environment.yml")
    return root


def test_introspect_lists_the_collections_python_and_system_dependencies_from_the_checkout():
    data = introspect(paths.COLLECTIONS)
    assert names(data["python"]) == PYTHON_DEPS, data
    assert names(data["system"]) == DEBIAN_PACKAGES | RHEL_PACKAGES, data
    assert all(line.endswith("# from collection ebpf.fleet") for line in data["python"] + data["system"]), data


def test_bindep_picks_the_debian_names_on_debian_and_the_rhel_names_on_rhel():
    with open(os.path.join(paths.REPO, "meta", "ee-bindep.txt"), encoding="utf-8") as handle:
        depends = Depends(handle.read())
    debian = {rule[0] for rule in depends.active_rules(["platform:dpkg", "platform:debian", "platform:ubuntu"])}
    rhel = {rule[0] for rule in depends.active_rules(["platform:rpm", "platform:redhat", "platform:centos"])}
    assert debian == DEBIAN_PACKAGES
    assert rhel == RHEL_PACKAGES


def test_the_ee_definition_names_the_tarball_of_galaxy_yml_version():
    with open(os.path.join(paths.REPO, "execution-environment.yml"), encoding="utf-8") as handle:
        ee = yaml.safe_load(handle)
    assert ee["version"] == 3
    (build_file,) = ee["additional_build_files"]
    assert build_file == {"src": "build/dist/" + TARBALL, "dest": "collections"}
    assert ee["dependencies"]["galaxy"]["collections"] == [{"name": "/build/collections/" + TARBALL, "type": "file"}]
    assert ee["options"]["tags"] == ["ebpf-fleet-ee:%s" % GALAXY["version"]]


def test_ansible_builder_create_makes_a_context_that_installs_the_collection_and_finds_its_dependencies(ee_dir, tmp_path):
    context = tmp_path / "context"
    run(
        os.path.join(BIN, "ansible-builder"),
        "create",
        "-f",
        "execution-environment.yml",
        "--context",
        str(context),
        "--output-filename",
        "Containerfile",
        cwd=ee_dir,
    )
    containerfile = (context / "Containerfile").read_text()
    build = context / "_build"

    # the tarball is in the context, byte for byte, and the galaxy stage installs it from there
    assert (build / "collections" / TARBALL).read_bytes() == (ee_dir / "build" / "dist" / TARBALL).read_bytes()
    requirements = yaml.safe_load((build / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": "/build/collections/" + TARBALL, "type": "file"}]}
    assert "COPY _build /build" in containerfile
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    assert 'ARG EE_BASE_IMAGE="ebpf-fleet-ee-base:latest"' in containerfile
    assert "introspect.py introspect --write-bindep=/tmp/src/bindep.txt --write-pip=/tmp/src/requirements.txt" in containerfile

    # the tarball carries the collection's EE metadata, and the builder stage's own script finds the dependencies
    # in the collection installed from it (as the image build does after the galaxy stage)
    with tarfile.open(build / "collections" / TARBALL) as tar:
        members = set(tar.getnames())
    assert {"meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt"} <= members
    assert "execution-environment.yml" not in members, "the EE definition builds from a checkout: it stays there"
    installed = tmp_path / "collections"
    # only the target path counts: a copy of the collection in ~/.ansible/collections would make it "already installed"
    run(
        os.path.join(BIN, "ansible-galaxy"),
        "collection",
        "install",
        "-p",
        str(installed),
        str(build / "collections" / TARBALL),
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed)),
    )
    pip_out, bindep_out = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    run(paths.PYTHON, str(build / "scripts" / "introspect.py"), "introspect", "--write-pip", str(pip_out), "--write-bindep", str(bindep_out), str(installed))
    assert names(pip_out.read_text().splitlines()) - {""} == PYTHON_DEPS
    assert names(bindep_out.read_text().splitlines()) - {""} == DEBIAN_PACKAGES | RHEL_PACKAGES
