"""Per-model work in worker processes gives what it gives in this process."""
import operator

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
