"""Shared test settings: one torch thread per worker (``pytest -n 2`` on two cores), fixed seeds."""

from __future__ import annotations

import os

# Before torch spins up its thread pools: one thread per xdist worker, and the same for the
# fresh Python processes that the save / load tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _single_thread_and_seed() -> None:
    """Every test starts single-threaded and seeded, so results do not depend on test order."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
