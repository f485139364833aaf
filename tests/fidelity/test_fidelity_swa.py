"""SWA in a real run with a BatchNorm network: after each update the averaged model's BN
statistics are re-estimated on clean training data (KDSA's / the AdvLC authors' `bn_update`).

The shipped digits presets use cnn_small, which has no BatchNorm, so the BN pass is a no-op in
every existing SWA run test. Here the digits SWA preset runs with a WideResNet-10-1 (BN
everywhere) on the first 100 training digits (two full batches of 50, no augmentation on
digits), and the first BN layer of `swa_end.pt` (layer1.block0.bn1, whose input is conv1(x),
independent of the batch composition) must hold the exact mean of conv1(x) over those 100
images, computed here with the averaged weights. Its parameters must be the equal-weight mean
of the end-of-epoch weights. < 1 s on a CPU with one thread (plus the one-time import of the
training stack).
"""

import pytest
import torch

from engine.config import schema as C
from engine.config.presets import preset_runs
from engine.launch.supervisor import create_runs
from engine.nn.datasets import load_dataset
from engine.run.process import run
from engine.store.index import Store

OV = [
    "model.arch=wide_resnet",
    "model.depth=10",
    "model.width=1",
    "data.n_train=100",
    "train.batch_size=50",
    "train.epochs=2",
    "swa.start=0",
    "eval.n=10",
    "eval.ig=false",
    "eval.hs_every=0",
    "eval.final=[]",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one intra-op thread (conftest.py)


def test_swa_bn_statistics_are_re_estimated_and_weights_averaged(tmp_path):
    store = Store(tmp_path)
    [rd] = create_runs(store, preset_runs("quick/digits-fgsm_n-advlc-swa", OV, home=tmp_path))
    snaps = {}

    def event(kind, info):
        if kind == "epoch":
            snaps[info["epoch"]] = torch.load(rd.ckpt("last"), weights_only=True)["model"]

    assert run(rd, store, on_event=event, log=lambda s: None) == "finished"
    end = torch.load(rd.ckpt("swa_end"), weights_only=True)
    assert end["n"] == 2
    sd = end["model"]
    # equal-weight average of the two end-of-epoch snapshots (parameters only)
    for name in ("conv1.weight", "layer1.block0.conv1.weight", "fc0.weight", "layer1.block0.bn1.weight"):
        torch.testing.assert_close(sd[name], (snaps[0][name] + snaps[1][name]) / 2, rtol=1e-5, atol=1e-7)
    # BN statistics: exact mean of the BN layer's input over the 100 clean training images
    x_train = load_dataset(C.from_json(rd.config_json()).data).train_x.float()
    assert x_train.shape == (100, 1, 8, 8) and 0.0 <= x_train.min() and x_train.max() <= 1.0
    with torch.no_grad():
        feats = torch.nn.functional.conv2d(x_train, sd["conv1.weight"], padding=1)
    torch.testing.assert_close(sd["layer1.block0.bn1.running_mean"], feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
    # and not the live model's (train-time, adversarial-batch) statistics
    assert not torch.allclose(
        sd["layer1.block0.bn1.running_mean"], snaps[1]["layer1.block0.bn1.running_mean"], rtol=1e-3, atol=1e-5
    )
