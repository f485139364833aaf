"""`advlc export --tensorboard DIR` (engine/report/tensorboard.py), read back with TensorBoard's own readers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.report import tensorboard as tbx
from engine.store.index import Store
from fabricate import fabricate_run

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[test]' brings it)")
from tensorboard.backend.event_processing import (  # noqa: E402
    event_accumulator,
    event_multiplexer,
    plugin_event_multiplexer,  # noqa: E402
)
from tensorboard.plugins.hparams import metadata as hp_metadata  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TAG0 = "quick/digits-pgd10/fgsm_n+advlc/seed0"
TAG1 = "quick/digits-pgd10/fgsm_n+advlc/seed1"
EPOCH_KEYS = (
    "lr",
    "train_loss",
    "train_acc",
    "clean_loss",
    "clean_acc",
    "robust_loss",
    "robust_acc",
    "av",
    "ig",
    "hs",
    "time_s",
    "images_per_s",
)


def fabricated_run(seed: int = 0):
    """A 6-epoch run evaluated every 2nd epoch (and the last), HS at the end only, 2 SWA updates."""
    rng = np.random.default_rng(seed)
    epochs = []
    for ep in range(6):
        evald = ep % 2 == 1 or ep == 5
        rec = dict.fromkeys(("epoch",) + EPOCH_KEYS)
        rec.update(
            epoch=ep,
            lr=0.05 if ep < 4 else 0.005,
            train_loss=float(2.0 / (ep + 1)),
            train_acc=float(rng.uniform(0.3, 0.9)),
            time_s=0.4 + ep / 100,
            images_per_s=1437 / (0.4 + ep / 100),
        )
        if evald:
            rec.update(
                clean_loss=float(rng.uniform(0.2, 1)),
                clean_acc=float(rng.uniform(0.8, 0.99)),
                robust_loss=float(rng.uniform(0.5, 2)),
                robust_acc=float(rng.uniform(0.3, 0.6)),
                av=float(rng.uniform(0, 5)),
                ig=3.2 + ep,
            )
        if ep == 5:
            rec["hs"] = 12.5
        epochs.append(rec)
    epochs[3]["robust_acc"] = epochs[5]["robust_acc"] = 0.65  # tie: best is the later epoch (5)
    swa = []
    for ep in (4, 5):
        rec = dict.fromkeys(("epoch",) + EPOCH_KEYS)
        rec.update(epoch=ep, lr=0.005, clean_acc=0.9 + ep / 100, robust_acc=0.6 + ep / 100, time_s=0.1)
        swa.append(rec)
    evals = [
        {
            "ckpt": "best",
            "attack": "aa",
            "implementation": "pyautoattack",
            "eps": 0.15,
            "n": 359,
            "clean_acc": 0.91,
            "robust_acc": 0.55,
            "epoch": 5,
            "time_s": 3.0,
        },
        {
            "ckpt": "end",
            "attack": "aa",
            "implementation": "pyautoattack",
            "eps": 0.15,
            "n": 359,
            "clean_acc": 0.92,
            "robust_acc": 0.52,
            "epoch": 5,
            "time_s": 3.0,
        },
        {
            "ckpt": "best",
            "attack": "pgd20",
            "implementation": "advlc",
            "eps": 0.15,
            "n": 359,
            "clean_acc": 0.91,
            "robust_acc": 0.6,
            "epoch": None,
        },  # unknown epoch -> 0
        {
            "ckpt": "end",
            "attack": "aa",
            "implementation": "pyautoattack",
            "eps": 0.15,
            "n": 359,
            "clean_acc": 0.925,
            "robust_acc": 0.515,
            "epoch": 5,
        },  # same pair: last wins
    ]
    config = {
        "run": {"preset": "quick/digits-pgd10", "label": "fgsm_n+advlc", "seed": seed},
        "data": {"dataset": "digits", "crop_padding": 0, "flip": False},
        "attack": {"name": "fgsm_n", "eps": 0.15, "alpha": None},
        "method": {"name": "advlc", "lam": 0.1, "top_n": 50},
        "train": {"epochs": 6, "lr": 0.05, "lr_milestones": [12, 17], "seed": seed},
        "eval": {"final": ["aa", "pgd20"], "hs_every": 1, "nested": {"deep": 1.5}},
    }
    return config, epochs, evals, swa


def expected_scalars(epochs, evals, swa) -> dict[str, list[tuple[int, float]]]:
    """Independent statement of what must be in the file: tag -> [(step, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for prefix, recs in (("epoch", epochs), ("swa", swa)):
        for r in recs:
            for k, v in r.items():
                if k != "epoch" and v is not None:
                    out.setdefault(f"{prefix}/{k}", []).append((r["epoch"], v))
    last = {}
    for e in evals:
        last[(e["ckpt"], e["attack"])] = e
    for (ck, at), e in last.items():
        for k in ("clean_acc", "robust_acc"):
            out[f"eval/{ck}/{at}/{k}"] = [(e["epoch"] or 0, e[k])]
    # headline: best = epoch 5 (tie at 0.65 with epoch 3, the later wins), end = epoch 5
    out["headline/best_robust_acc"] = [(5, 0.65)]
    out["headline/best_clean_acc"] = [(5, epochs[5]["clean_acc"])]
    out["headline/end_robust_acc"] = [(5, 0.65)]
    out["headline/end_clean_acc"] = [(5, epochs[5]["clean_acc"])]
    out["headline/swa_best_robust_acc"] = [(5, 0.65)]
    out["headline/swa_end_robust_acc"] = [(5, 0.65)]
    return out


def load(run_dir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(
        str(run_dir),
        size_guidance={
            k: 0
            for k in (
                event_accumulator.SCALARS,
                event_accumulator.TENSORS,
                event_accumulator.HISTOGRAMS,
                event_accumulator.IMAGES,
                event_accumulator.AUDIO,
                event_accumulator.COMPRESSED_HISTOGRAMS,
            )
        },
    )
    return acc.Reload()


@pytest.fixture
def run0(tmp_path):
    config, epochs, evals, swa = fabricated_run(0)
    run_dir = tbx.write_run(tmp_path, tag=TAG0, config=config, epochs=epochs, evals=evals, swa=swa)
    return tmp_path, run_dir, (config, epochs, evals, swa)


# ---------------------------------------------------------------------------- the writer
def test_folder_is_the_tag(run0):
    log_dir, run_dir, _ = run0
    assert run_dir == log_dir / TAG0
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1


def test_every_scalar_and_step_round_trips(run0):
    _, run_dir, (config, epochs, evals, swa) = run0
    acc = load(run_dir)
    want = expected_scalars(epochs, evals, swa)
    assert set(acc.Tags()["scalars"]) == set(want)
    for tag, points in want.items():
        got = [(s.step, s.value) for s in acc.Scalars(tag)]
        assert [p[0] for p in got] == [p[0] for p in points], tag
        for (_, v_got), (_, v_want) in zip(got, points):
            assert v_got == float(np.float32(v_want)), (tag, v_got, v_want)  # float32 on disk


def test_none_values_are_absent(run0):
    _, run_dir, _ = run0
    acc = load(run_dir)
    tags = set(acc.Tags()["scalars"])
    assert "epoch/epoch" not in tags
    assert not {"swa/train_loss", "swa/train_acc", "swa/images_per_s", "swa/hs"} & tags
    assert [s.step for s in acc.Scalars("epoch/robust_acc")] == [1, 3, 5]  # evaluated epochs only
    assert [s.step for s in acc.Scalars("epoch/hs")] == [5]


def test_hparams(run0):
    _, run_dir, (config, *_rest) = run0
    acc = load(run_dir)
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    assert set(content) == {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG}
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    assert start.group_name == TAG0
    got = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    assert got == {
        "run.preset": "quick/digits-pgd10",
        "run.label": "fgsm_n+advlc",
        "run.seed": 0,
        "data.dataset": "digits",
        "data.crop_padding": 0,
        "data.flip": False,
        "attack.name": "fgsm_n",
        "attack.eps": 0.15,
        "attack.alpha": "None",
        "method.name": "advlc",
        "method.lam": 0.1,
        "method.top_n": 50,
        "train.epochs": 6,
        "train.lr": 0.05,
        "train.lr_milestones": "[12, 17]",
        "train.seed": 0,
        "eval.final": '["aa", "pgd20"]',
        "eval.hs_every": 1,
        "eval.nested.deep": 1.5,
    }
    assert isinstance(got["data.flip"], bool) and isinstance(got["attack.eps"], float)
    exp = hp_metadata.parse_experiment_plugin_data(content[hp_metadata.EXPERIMENT_TAG])
    assert sorted(h.name for h in exp.hparam_infos) == sorted(got)
    assert [m.name.tag for m in exp.metric_infos] == list(tbx.HPARAM_METRICS)


def test_config_text(run0):
    _, run_dir, (config, *_rest) = run0
    acc = load(run_dir)
    (ev,) = acc.Tensors("config")
    assert ev.step == 0
    text = tensor_util.make_ndarray(ev.tensor_proto).item().decode()
    assert text.startswith("```json\n") and text.endswith("\n```")
    assert json.loads(text[len("```json\n") : -len("\n```")]) == config
    assert acc.PluginTagToContent("text").keys() == {"config"}


def test_two_runs_in_one_log_dir_as_the_ui_reads_them(tmp_path):
    for seed, tag in ((0, TAG0), (1, TAG1)):
        config, epochs, evals, swa = fabricated_run(seed)
        tbx.write_run(tmp_path, tag=tag, config=config, epochs=epochs, evals=evals, swa=swa)
    mux = event_multiplexer.EventMultiplexer(size_guidance={event_accumulator.SCALARS: 0})
    mux.AddRunsFromDirectory(str(tmp_path)).Reload()
    assert set(mux.Runs()) == {TAG0, TAG1}
    for seed, tag in ((0, TAG0), (1, TAG1)):
        _, epochs, _, _ = fabricated_run(seed)
        assert [s.value for s in mux.Scalars(tag, "epoch/train_acc")] == [
            float(np.float32(e["train_acc"])) for e in epochs
        ]
    pmux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"scalars": 0})
    pmux.AddRunsFromDirectory(str(tmp_path)).Reload()
    for tag in (TAG0, TAG1):
        assert "epoch/robust_acc" in pmux.PluginRunToTagToContent("scalars")[tag]
        assert hp_metadata.SESSION_START_INFO_TAG in pmux.PluginRunToTagToContent("hparams")[tag]
        (ev,) = pmux.Tensors(tag, "headline/best_robust_acc")
        assert tensor_util.make_ndarray(ev.tensor_proto).item() == float(np.float32(0.65))


def test_rewrite_replaces_and_overwrite_false_refuses(tmp_path):
    config, epochs, evals, swa = fabricated_run(0)
    tbx.write_run(tmp_path, tag=TAG0, config=config, epochs=epochs, evals=evals, swa=swa)
    tbx.write_run(tmp_path, tag=TAG0, config=config, epochs=epochs[:2], evals=[], swa=[])
    run_dir = tmp_path / TAG0
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert [s.step for s in load(run_dir).Scalars("epoch/train_loss")] == [0, 1]
    with pytest.raises(FileExistsError):
        tbx.write_run(tmp_path, tag=TAG0, config=config, epochs=epochs, evals=[], overwrite=False)


@pytest.mark.parametrize(
    "tag, folder",
    [
        ("quick/digits-pgd10/fgsm_n+advlc/seed0", "quick/digits-pgd10/fgsm_n+advlc/seed0"),
        ("a b:c*?/d", "a_b_c__/d"),
        ("/x//./y/", "x/y"),
        ("../../etc", "_./_./etc"),
        (".hidden/z", "_hidden/z"),
    ],
)
def test_tag_to_folder_stays_inside_the_log_dir(tmp_path, tag, folder):
    config, epochs, _evals, _swa = fabricated_run(0)
    run_dir = tbx.write_run(tmp_path, tag=tag, config=config, epochs=epochs[:1], evals=[])
    assert run_dir == tmp_path / folder
    assert run_dir.resolve().is_relative_to(tmp_path.resolve())


def test_bad_input_writes_nothing(tmp_path):
    with pytest.raises(ValueError):
        tbx.write_run(tmp_path, tag="///", config={}, epochs=[], evals=[])
    with pytest.raises(ValueError, match="epoch"):
        tbx.write_run(tmp_path, tag="t", config={}, epochs=[{"lr": 0.1}], evals=[])
    assert not any(tmp_path.iterdir())


def test_nan_is_kept(tmp_path):
    run_dir = tbx.write_run(tmp_path, tag="t", config={}, epochs=[{"epoch": 0, "train_loss": math.nan}], evals=[])
    (s,) = load(run_dir).Scalars("epoch/train_loss")
    assert math.isnan(s.value)


def test_run_tag():
    assert (
        tbx.run_tag({"run": {"preset": "quick/digits-fgsm_n-advlc", "label": "fgsm_n+advlc", "seed": 2}}, "0000abcd")
        == "quick/digits-fgsm_n-advlc/fgsm_n+advlc/seed2-0000abcd"
    )
    assert (
        tbx.run_tag({"run": {"preset": "/home/me/exp/mine.toml", "label": "pgd", "seed": 0}}, "01")
        == "mine/pgd/seed0-01"
    )


# ---------------------------------------------------------------------------- the command
def _advlc(home, *argv, pre=""):
    code = f"import sys\n{pre}from tui.cli import main\nmain(sys.argv[1:])\n"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "ADVLC_HOME": str(home), "COLUMNS": "80"},
        timeout=120,
    )


def test_export_command_writes_every_run_of_a_preset(tmp_path):
    store = Store(tmp_path / "home").ensure()
    for i, preset in enumerate(("quick/digits-fgsm_n-advlc", "quick/digits-fgsm_n-advlc", "quick/digits-fgsm_n")):
        fabricate_run(
            store,
            f"0000000{i}",
            preset=preset,
            seed=i,
            group=None,
            total=6,
            done=6,
            state="finished",
            created=1_700_000_000 + i,
            swa=i == 0,
        )
    store.reindex()
    out = tmp_path / "tb"
    p = _advlc(store.home, "export", "--preset", "quick/digits-fgsm_n-advlc", "--tensorboard", str(out))
    assert p.returncode == 0, p.stderr
    assert f"tensorboard --logdir {out}" in " ".join(p.stderr.split())
    mux = event_multiplexer.EventMultiplexer(size_guidance={event_accumulator.SCALARS: 0})
    mux.AddRunsFromDirectory(str(out)).Reload()
    assert set(mux.Runs()) == {
        "quick/digits-fgsm_n-advlc/fgsm_n+advlc/seed0-00000000",
        "quick/digits-fgsm_n-advlc/fgsm_n+advlc/seed1-00000001",
    }
    rd = store.run_dir("00000000")
    tag = "quick/digits-fgsm_n-advlc/fgsm_n+advlc/seed0-00000000"
    assert [s.step for s in mux.Scalars(tag, "epoch/robust_acc")] == [r["epoch"] for r in rd.epochs()]
    assert [s.value for s in mux.Scalars(tag, "epoch/robust_acc")] == [
        float(np.float32(r["robust_acc"])) for r in rd.epochs()
    ]
    assert "swa/robust_acc" in mux.Runs()[tag]["scalars"]
    # by id, into the same folder: the other run is added, re-exporting replaces
    p = _advlc(store.home, "export", "00000002", "00000000", "--tensorboard", str(out))
    assert p.returncode == 0, p.stderr
    assert len(list((out / tag).glob("events.out.tfevents.*"))) == 1
    assert (out / "quick/digits-fgsm_n/fgsm_n/seed2-00000002").is_dir()
    # exporting loads no torch (and no TensorFlow)
    code = (
        "import sys\nfrom tui.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    assert not e.code, e.code\nheavy = [m for m in ('torch', 'tensorflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "export", "00000002", "--tensorboard", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "ADVLC_HOME": str(store.home)},
        timeout=120,
    )
    assert p.returncode == 0, p.stderr


def test_export_errors_are_one_line(tmp_path):
    store = Store(tmp_path / "home").ensure()
    fabricate_run(
        store,
        "00000001",
        preset="quick/digits-fgsm_n",
        seed=0,
        group=None,
        total=3,
        done=3,
        state="finished",
        created=1_700_000_000,
    )
    store.reindex()
    for argv, words in (
        (["export", "00000001"], "--tensorboard DIR"),
        (["export", "--tensorboard", str(tmp_path / "tb")], "run ids"),
        (["export", "nope", "--tensorboard", str(tmp_path / "tb")], "no run 'nope'"),
    ):
        p = _advlc(store.home, *argv)
        assert p.returncode == 2 and words in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    # without tensorboard: one line naming the pip command, nothing written
    p = _advlc(
        store.home,
        "export",
        "00000001",
        "--tensorboard",
        str(tmp_path / "tb2"),
        pre="sys.modules['tensorboard'] = None\n",
    )
    assert p.returncode == 2, p.stderr
    assert "pip install 'advlc[tensorboard]'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "tb2").exists()


def test_module_imports_without_tensorboard():
    code = (
        "import sys\nsys.modules['tensorboard'] = None\nimport engine.report.tensorboard, engine.facade\n"
        "print(sorted(m for m in sys.modules if m.startswith('tensorboard') and sys.modules[m] is not None))"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr
