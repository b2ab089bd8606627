"""Per-model work in worker processes gives what it gives in this process."""
import operator
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xl.core import workers


def test_processes_return_what_this_process_returns_in_order():
    items = list(range(7))
    assert workers.map_in_processes(operator.mul, items, 2, 10) == [10 * i for i in items]
    assert workers.map_in_processes(operator.mul, items, 1, 10) == [10 * i for i in items]


def test_workers_run_one_thread_each():
    threads = workers.map_in_processes(_threads, [0, 1], 2)
    assert threads == [1, 1]
    assert workers.map_in_processes(_threads, [0], 2) == [torch.get_num_threads()]  # one item: this process


def _threads(_):
    return torch.get_num_threads()


PAGES = 16 * 2**20 * 4 // 4096  # of a 64 MB tensor, above glibc's largest mmap threshold (32 MB)


def _faults_of_big_tensors(_=None) -> int:
    """Page faults while five 64 MB tensors are filled, each freed before the next, after twelve more:
    with freed memory kept, a worker's heap grows for up to nine such tensors (measured) before the
    freed ones are reused, as small allocations made between them keep them apart at first."""
    for _ in range(12):
        torch.ones(16 * 2**20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_workers_reuse_freed_memory_instead_of_faulting_it_in_again():
    fresh = subprocess.run([sys.executable, "-c", "import sys; sys.path[:0] = sys.argv[1:]; import test_workers as t; "
                            "print(t._faults_of_big_tensors())", str(Path(__file__).parent)],
                           capture_output=True, text=True, check=True)
    assert int(fresh.stdout) > 4 * PAGES  # glibc's default: each one mapped afresh, every page faulted in
    assert max(workers.map_in_processes(_faults_of_big_tensors, [0, 1], 2)) < PAGES
