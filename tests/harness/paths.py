"""Where things are: the repository, the built BPF objects, the collection path, the venv."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "build")
BPF_BUILD = os.path.join(BUILD, "bpf")
BPF_SRC = os.path.join(REPO, "bpf")
BPF_INCLUDE = os.path.join(BPF_SRC, "include")
# build/collections/ansible_collections/ebpf/fleet -> the repository (made by `make collection-link`)
COLLECTIONS = os.path.join(BUILD, "collections")
PYTHON = sys.executable


def bpf_object(name: str) -> str:
    """Path of a compiled object from bpf/ (built by `make bpf`)."""
    path = os.path.join(BPF_BUILD, name if name.endswith(".o") else name + ".o")
    if not os.path.exists(path):
        raise FileNotFoundError("%s is missing: run `make bpf` first" % path)
    return path
