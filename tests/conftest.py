import os

import pytest
import torch

# Tests are written for a 2-core machine: one torch pool, deterministic kernels.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: Environment variable naming the device of the layer and estimator tests
#: that take the ``device`` fixture ("cpu" by default, "cuda" on a GPU machine).
DEVICE_ENV = "WDIST_TEST_DEVICE"


def pytest_addoption(parser):
    parser.addoption("--device", default=None,
                     help=f"device for the tests that take the `device` fixture (cpu, cuda, cuda:N); "
                          f"default ${DEVICE_ENV} or cpu")


def pytest_configure(config):
    name = config.getoption("--device") or os.environ.get(DEVICE_ENV, "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise pytest.UsageError(f"--device / {DEVICE_ENV}: unknown device {name!r}") from exc
    # A CUDA run asked for on a machine without CUDA must fail loudly, not
    # silently test the CPU again.
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device / {DEVICE_ENV}={name}: CUDA is not available on this machine")
    config.wdist_device = device


@pytest.fixture
def device(request) -> torch.device:
    """The device the test runs its modules and estimates on (``--device`` or ``$WDIST_TEST_DEVICE``)."""
    return request.config.wdist_device


def pytest_report_header(config):
    return f"wdist test device: {config.wdist_device}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
