"""Shared fixtures: a tiny model and digits batch, and a private run store per test."""

import os

import pytest
import torch
import torch.nn as nn

torch.set_num_threads(min(2, os.cpu_count() or 1))


class TinyNet(nn.Module):
    """A small ReLU CNN with BatchNorm, so train/eval mode matters."""

    def __init__(self, c=1, s=8, k=10):
        super().__init__()
        self.conv = nn.Conv2d(c, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8 * s * s, k)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture(scope="session")
def digits_batch():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:64], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:64], dtype=torch.long)
    return x, y


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("ADVLC_HOME", str(h))
    return h


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny ops (this file sets 2): avoids OpenMP contention on
    a busy machine. Used as `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped (with the reason) on a machine without it, so
    `pytest -m gpu` on a CPU reports skips rather than failures."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (a GPU machine: scripts/gpu-check.sh)")
    for item in gpu:
        item.add_marker(skip)
