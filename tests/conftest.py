import os

import pytest
import torch

# Tests are written for a 2-core machine: one torch pool, deterministic kernels.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
