"""The CPUs a test or benchmark runs BPF programs on.

BPF_PROG_TEST_RUN runs the program on the calling thread's CPU, and flows move between CPUs in production, so
the connection-table tests and the benchmarks run on every CPU this process may use, one after the other.
"""

import contextlib
import os


def cpus() -> list:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


@contextlib.contextmanager
def on_cpu(cpu):
    """Pin the calling thread to one CPU; restore its affinity afterwards."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)
