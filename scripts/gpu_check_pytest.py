"""pytest plugin of scripts/gpu-check.sh (`-p gpu_check_pytest`, with scripts/ on PYTHONPATH).

Where no CUDA device is present, every test marked `gpu` is skipped with a reason instead of
failing in `.cuda()`: `gpu-check.sh --smoke` runs `pytest -m gpu` on a CPU. A test marked `gpu`
without its own skipif (tests/nn/test_methods.py::test_no_host_sync_on_cuda) would otherwise fail
there. With CUDA present the plugin changes nothing. (The same hook in tests/conftest.py would
make plain `pytest -m gpu` skip cleanly on a CPU too.)
"""

import pytest


def pytest_collection_modifyitems(config, items):
    import torch  # the test suite loads it anyway

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device here (scripts/gpu_check_pytest.py)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
