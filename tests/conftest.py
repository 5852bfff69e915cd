"""Shared set-up for every test.

Every test starts from the same random state, and runs on one intra-op thread: the tensors in
unit tests are tiny, and on a loaded 2-core machine waking a second OpenMP thread costs
milliseconds per op.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
