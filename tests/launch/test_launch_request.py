"""One launch request for the command line and the Presets screen: the same fields give the same
runs, and every mistake in a field is one line naming it."""

from __future__ import annotations

import pytest
from helpers import cli

from engine.config.schema import label
from engine.errors import UserError
from engine.facade import LaunchRequest, parse_gpus, split_overrides

PRESET = "quick/robust-overfitting"


def test_the_cli_and_the_screen_plan_the_same_runs(home, monkeypatch):
    seen = {}

    def capture(store, planned, req):
        seen.update(planned=planned, req=req)

    monkeypatch.setattr("tui.cli.runs.launch_detached", capture)
    cli(
        "run",
        PRESET,
        "--set",
        "train.epochs=2",
        "--set",
        "train.lr_milestones=[1]",
        "--seeds",
        "2",
        "--device",
        "cpu",
        "--gpus",
        "0,1",
        code=0,
    )
    req = LaunchRequest.from_fields(
        PRESET, overrides="train.epochs=2 train.lr_milestones=[1]", seeds="2", device="cpu", gpus="0 1"
    )
    app_runs = req.plan()
    assert seen["req"].gpus == req.gpus == [0, 1] and seen["req"].background and req.background
    cli_runs = seen["planned"]
    assert (
        [(label(p.cfg), p.seed) for p in cli_runs]
        == [(label(p.cfg), p.seed) for p in app_runs]
        == [("pgd", 0), ("pgd", 1), ("pgd+advlc", 0), ("pgd+advlc", 1)]
    )
    assert [p.cfg.to_dict() for p in cli_runs] == [p.cfg.to_dict() for p in app_runs]
    assert cli_runs[0].command.startswith("advlc ") and app_runs[0].command == "app"  # sys.argv: pytest's here
    # --seed is the first seed: the app has no field for it, the request has
    assert [p.seed for p in LaunchRequest(PRESET, seeds=2, seed=5).plan()] == [5, 6, 5, 6]


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(seeds="two"), "seeds = 'two': must be a whole number >= 1"),
        (dict(seeds="0"), "seeds = 0: must be a whole number >= 1"),
        (dict(gpus="0,x"), "GPUs = 0,x: give GPU ids separated by commas, e.g. 0,1"),
        (dict(gpus="-1"), "GPUs = -1: GPU ids are numbers >= 0"),
        (dict(executor="k8s"), "--executor k8s: must be local or slurm"),
        (dict(overrides="train.epochs"), "override 'train.epochs': expected section.key=value"),
        (dict(overrides="'train.epochs=2"), "overrides: No closing quotation"),
    ],
)
def test_each_field_mistake_is_one_line_naming_it(fields, message):
    with pytest.raises(UserError) as exc:
        LaunchRequest.from_fields(PRESET, **fields)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_requests_the_foreground_cannot_serve_are_refused():
    with pytest.raises(UserError, match="--with-teachers trains the teachers before the student"):
        LaunchRequest(PRESET, detach=True, with_teachers=True).checked()
    with pytest.raises(UserError, match="slots per GPU = 65: must be between 1 and 64"):
        LaunchRequest(PRESET, slots_per_gpu=65).checked()
    assert not LaunchRequest(PRESET).background
    assert LaunchRequest(PRESET, executor="slurm").background  # Slurm never trains in this terminal


def test_gpus_and_overrides_parse_as_documented():
    assert parse_gpus("all") is None and parse_gpus("") is None and parse_gpus(" 0, 2 ") == [0, 2]
    assert split_overrides("train.epochs=2 train.lr_milestones=[5, 8]") == [
        "train.epochs=2",
        "train.lr_milestones=[5, 8]",
    ]


def test_one_device_rule_for_runs_and_benchmarks(monkeypatch):
    """Runs (train.device) and `advlc bench --device` read a device by one rule, naming their own field."""
    import torch

    from engine.bench.common import resolve_device
    from engine.run.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == resolve_device("auto") == resolve_device("") == torch.device("cpu")
    for name, why in (("tpu", "must be auto, cpu, cuda or cuda:N"), ("cuda:1", "CUDA is not available")):
        for fn, what in ((pick_device, "train.device"), (resolve_device, "--device")):
            with pytest.raises(UserError) as exc:
                fn(name)
            assert str(exc.value).startswith(f"{what} = {name!r}: {why}")
