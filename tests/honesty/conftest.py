"""Every honesty test runs its small models on one thread (the ``one_thread`` fixture)."""

import pytest


@pytest.fixture(autouse=True)
def _honesty_on_one_thread(one_thread):
    yield
