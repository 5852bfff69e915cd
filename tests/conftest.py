"""Shared set-up for every test.

Every test runs on one intra-op thread, whatever the shell sets (``OMP_NUM_THREADS`` unset, 1 or
2): the tensors in unit tests are tiny, and on a loaded 2-core machine waking a second OpenMP
thread costs milliseconds per op. More importantly, runs compared bit for bit (an uninterrupted
run against a resumed one) must train under one thread count, and a module- or session-scoped
fixture that trains a reference run is set up *before* any function-scoped fixture. So the count
is set once for the session, in ``pytest_configure`` (before any fixture of any scope), and a
function-scoped fixture puts it back after a test that changed it.
"""

import pytest
import torch

THREADS = 1  # the intra-op thread count every test starts with


def pytest_configure(config):
    torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)
