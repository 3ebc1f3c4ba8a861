"""Honesty tests run their small models on one thread: on the shared 2-core machine,
intra-op threads of tiny matrices fight the other test worker and run many times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
