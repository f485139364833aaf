"""engine.service, the app's one door into the engine: each operation on a small fabricated store,
and a scan of tui/ that finds no store class, no import from engine.store and, in the app, none
of the facade's functions the service wraps."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fabricate import fabricate_run
from helpers import force_status

from engine import facade
from engine.errors import UserError
from engine.facade import LaunchRequest
from engine.launch.processes import HOST
from engine.service import Service

ROOT = Path(__file__).resolve().parents[2]


def epochs(robust: list[float]) -> list[dict]:
    """Epoch records whose robust accuracies are `robust` (the rest fixed)."""
    return [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 1.0,
            "train_acc": 0.5,
            "clean_loss": 1.0,
            "clean_acc": 0.8,
            "robust_loss": 1.5,
            "robust_acc": r,
            "av": 0.5,
            "ig": 30.0,
            "hs": None,
            "time_s": 2.0,
            "images_per_s": 100.0,
        }
        for e, r in enumerate(robust)
    ]


@pytest.fixture
def service(tmp_path):
    """Two finished seeds of one preset (a0, a1), a finished run of another (b0), a queued one (q0)."""
    svc = Service(tmp_path / "home")
    t0 = time.time() - 3600
    fab = dict(group=None, total=2, done=2, state="finished")
    fabricate_run(
        svc.store,
        "000000a0",
        preset="quick/digits-fgsm_n",
        seed=0,
        created=t0,
        epochs_override=epochs([0.30, 0.40]),
        **fab,
    )
    fabricate_run(
        svc.store,
        "000000a1",
        preset="quick/digits-fgsm_n",
        seed=1,
        created=t0 + 1,
        epochs_override=epochs([0.50, 0.60]),
        **fab,
    )
    fabricate_run(
        svc.store,
        "000000b0",
        preset="quick/digits-fgsm_n-advlc",
        seed=0,
        created=t0 + 2,
        epochs_override=epochs([0.45, 0.55]),
        **fab,
    )
    fabricate_run(
        svc.store,
        "000000q0",
        preset="quick/digits-fgsm_n",
        seed=2,
        group=None,
        total=2,
        done=0,
        state="queued",
        created=t0 + 3,
    )
    svc.store.reindex()
    return svc


# ---------------------------------------------------------------------------- reading
def test_a_new_service_makes_its_store_and_a_reading_one_does_not(tmp_path):
    assert not Service(tmp_path / "nothing", create=False).store.runs_dir.exists()
    svc = Service(tmp_path / "home")
    assert svc.home == tmp_path / "home" and (tmp_path / "home" / "runs").is_dir()
    assert svc.runs() == []


def test_runs_are_index_rows_in_creation_order_and_archived_ones_on_demand(service):
    rows = service.runs()
    assert [r["id"] for r in rows] == ["000000a0", "000000a1", "000000b0", "000000q0"]
    assert rows[1]["preset"] == "quick/digits-fgsm_n" and rows[1]["seed"] == 1
    assert rows[1]["best_robust_acc"] == pytest.approx(0.60)
    assert [r["id"] for r in service.runs(state="queued")] == ["000000q0"]
    service.annotate(["000000a0"], archived=True)
    assert "000000a0" not in [r["id"] for r in service.runs()]
    assert [r["id"] for r in service.runs(archived=True)] == ["000000a0"]
    assert len(service.runs(archived=None)) == 4


def test_watch_hands_over_a_snapshot_only_when_the_index_changed(service):
    reader = service.watch()
    snap = reader.poll()
    assert snap is not None and [r["id"] for r in snap.rows][:3] == ["000000a0", "000000a1", "000000b0"]
    assert snap.counts() == {"finished": 3, "queued": 1}
    assert reader.poll() is None
    time.sleep(0.01)
    service.annotate(["000000b0"], title="the AdvLC one")
    snap = reader.poll()
    assert snap is not None and next(r for r in snap.rows if r["id"] == "000000b0")["title"] == "the AdvLC one"


def test_follow_hands_over_the_records_then_only_what_is_new(service):
    follower = service.follow("000000a1")
    d = follower.poll()
    assert d.reset and [e["robust_acc"] for e in d.epochs] == [0.50, 0.60]
    assert d.status is not None and d.status.state == "finished"
    assert d.config is not None and d.config.value("train.seed") == 1
    assert d.log_lines == ["epoch   0  robust 0.5000", "epoch   1  robust 0.6000"]
    assert follower.poll().empty()


def test_one_runs_config_status_and_meta_by_id_or_by_index_row(service):
    assert service.config("000000b0").value("method.name") == "advlc"
    assert service.status("000000q0").state == "queued"
    row = next(r for r in service.runs() if r["id"] == "000000a1")
    assert service.config(row).value("train.seed") == 1 and service.status(row).state == "finished"
    [meta] = service.annotate(["000000a1"], title="seed one", add_tags=["robust", "base"], note="a note")
    assert (meta.title, meta.tags, meta.note) == ("seed one", ["robust", "base"], "a note")
    assert service.meta("000000a1") == meta
    [meta] = service.annotate(["000000a1"], remove_tags=["base"])
    assert meta.tags == ["robust"] and meta.title == "seed one"
    with pytest.raises(UserError, match="leads outside|not a run id|run id"):
        service.status("../elsewhere")


def test_points_are_read_again_only_when_metrics_json_changed(service):
    first = service.points("000000q0", None)
    assert first is not None and first[1] == []  # metrics.json without points
    assert service.points("000000q0", first[0]) is None
    metrics = service.home / "runs" / "000000q0" / "metrics.json"
    metrics.write_text('{"epochs": {}, "points": {"1": {"kind": "fig4a", "index": 0, "hs": 0.5}}}')
    sig, points = service.points("000000q0", first[0])
    assert [dict(p) for p in points] == [{"kind": "fig4a", "index": 0, "hs": 0.5}]
    assert service.points("000000q0", sig) is None
    metrics.unlink()
    assert service.points("000000q0", None) is None  # no file, as last seen: nothing new


# ---------------------------------------------------------------------------- actions
def test_plan_resolves_a_launch_request_against_this_store(service):
    planned = service.plan(LaunchRequest("quick/digits-fgsm_n", seeds=2, command="app"))
    assert [p.seed for p in planned] == [0, 1] and {p.command for p in planned} == {"app"}
    assert planned[0].cfg.method.name == "fgsm_n"


def test_launch_resume_and_bench_hand_the_store_and_run_dirs_to_the_facade(service, monkeypatch):
    """What would start training processes is replaced; what the service hands over is checked."""
    seen: dict = {}

    def launch(store, planned, *, gpus, executor):
        seen["launch"] = (store.home, planned, gpus, executor)
        return [store.run_dir("000000c0"), store.run_dir("000000c1")]

    monkeypatch.setattr(facade, "launch", launch)
    monkeypatch.setattr(facade, "resume", lambda store, rd: seen.setdefault("resume", []).append(rd.path) or rd)
    monkeypatch.setattr(facade, "bench_hs", lambda **kw: {"kw": kw})
    assert service.launch(["p"], gpus=[0, 1], executor="local") == ["000000c0", "000000c1"]
    assert seen["launch"] == (service.home, ["p"], [0, 1], "local")
    assert service.resume(["000000a1", "000000a0"]) == ["000000a1", "000000a0"]
    assert seen["resume"] == [service.home / "runs" / "000000a1", service.home / "runs" / "000000a0"]
    assert service.bench("hs", run="000000a0") == {"kw": {"run": "000000a0", "home": service.home}}
    with pytest.raises(ValueError, match="one of steps, epoch, hs, concurrency"):
        service.bench("everything")


def test_stop_delete_and_reconcile_change_the_runs(service):
    assert service.stop(["000000q0"]) == {}
    assert service.status("000000q0").state == "stopped"
    assert next(r for r in service.runs() if r["id"] == "000000q0")["state"] == "stopped"
    with pytest.raises(UserError, match="has finished; nothing to resume"):
        service.resume(["000000b0"])
    assert service.delete(["000000b0"]) == {}
    assert not (service.home / "runs" / "000000b0").exists()
    assert [r["id"] for r in service.runs()] == ["000000a0", "000000a1", "000000q0"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    force_status(
        service.store.run_dir("000000a0"),
        state="running",
        pid=dead.pid,
        host=HOST,
        pid_create_time=time.time() - 5,
        heartbeat=time.time(),
    )
    assert service.reconcile(["000000a1"]) == []  # only the runs asked about
    assert service.reconcile(["000000a0"]) == ["000000a0"]
    assert service.status("000000a0").state == "lost"


def test_evaluate_refuses_a_running_run_before_loading_any_model(service):
    force_status(service.store.run_dir("000000b0"), state="running", pid=os.getpid())
    with pytest.raises(UserError, match="run 000000b0 is running"):
        service.evaluate("000000b", ckpts=["best"], attacks=["pgd20"])  # a unique prefix, as `advlc eval`


# ---------------------------------------------------------------------------- reports
def test_compare_curves_diff_export_and_report(service, tmp_path):
    table = service.compare(run_ids=["000000a0", "000000a1", "000000b0"], columns=["method.lam"])
    rows = {r.name: r for r in table.rows}
    assert sorted(rows) == ["fgsm_n", "fgsm_n+advlc"]
    assert sorted(rows["fgsm_n"].runs) == ["000000a0", "000000a1"] and sorted(rows["fgsm_n"].seeds) == [0, 1]
    assert rows["fgsm_n+advlc"].config_values == {"method.lam": 0.3}
    curves = service.curves(table, "robust_acc")
    assert [(p["epoch"], p["mean"]) for p in curves["fgsm_n"]] == [(0, pytest.approx(40.0)), (1, pytest.approx(50.0))]
    d = service.diff("000000a0", "000000a1")
    assert d["runs"] == ["000000a0", "000000a1"] and ("train.seed", 0, 1) in d["config"]
    paths = service.export(table, tmp_path / "out", ["md", "csv"])
    assert [p.name for p in paths] == ["table.md", "table.csv"] and "fgsm_n+advlc" in paths[1].read_text()
    res = service.report(["000000a0", "000000a1"], tmp_path / "rep", formats=["md"])
    assert sorted(res.runs) == ["000000a0", "000000a1"] and (tmp_path / "rep" / "report.md").exists()


# ---------------------------------------------------------------------------- the door
STORE_CLASSES = {"RunDir", "Store"}
APP_DIRS = ("screens", "widgets")
"""Folders of tui/ whose files never touch the store's objects (app.py keeps `store` for tests)."""


def wrapped_by_service() -> set[str]:
    """The facade functions engine/service.py calls (`facade.X`): the app asks the service for them."""
    tree = ast.parse((ROOT / "engine" / "service.py").read_text())
    return {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "facade"
    }


def open_doors(source: str, *, app: bool, screen: bool, wrapped: set[str]) -> list[str]:
    """What in `source` (a file of tui/) reaches past the service: a store class named, an import
    from engine.store; in the app (not tui/cli/) a facade function the service wraps; in a screen
    or widget the `.store` attribute."""
    out = []
    for n in ast.walk(ast.parse(source)):
        line = getattr(n, "lineno", "?")
        if (
            isinstance(n, ast.Name)
            and n.id in STORE_CLASSES
            or isinstance(n, ast.Attribute)
            and n.attr in STORE_CLASSES
            or isinstance(n, ast.Constant)
            and n.value in STORE_CLASSES
        ):
            out.append(f"{line}: names {ast.unparse(n)}")
        elif isinstance(n, ast.alias) and ({n.name.rpartition(".")[2], n.asname} & STORE_CLASSES):
            out.append(f"{line}: imports {n.name}")
        elif isinstance(n, ast.ImportFrom):
            mods = [n.module or ""] + [f"{n.module}.{a.name}" for a in n.names]
            if any(m == "engine.store" or m.startswith("engine.store.") for m in mods):
                out.append(f"{line}: imports from {n.module}")
            if app and n.module == "engine.facade" and {a.name for a in n.names} & wrapped:
                out.append(f"{line}: imports {sorted({a.name for a in n.names} & wrapped)} from the facade")
        elif isinstance(n, ast.Import) and any(a.name.startswith("engine.store") for a in n.names):
            out.append(f"{line}: imports engine.store")
        if (
            app
            and isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id == "facade"
            and n.attr in wrapped
        ):
            out.append(f"{line}: calls facade.{n.attr}")
        if screen and isinstance(n, ast.Attribute) and n.attr == "store":
            out.append(f"{line}: uses .store")
    return out


def test_tui_reaches_the_store_only_through_the_service():
    wrapped = wrapped_by_service()
    assert {"launch", "stop", "resume", "delete", "reconcile", "compare_runs", "diff_runs"} <= wrapped
    found = []
    for path in sorted((ROOT / "tui").rglob("*.py")):
        parts = path.relative_to(ROOT / "tui").parts
        doors = open_doors(path.read_text(), app=parts[0] != "cli", screen=parts[0] in APP_DIRS, wrapped=wrapped)
        found += [f"{path.relative_to(ROOT)}:{d}" for d in doors]
    assert found == []


@pytest.mark.parametrize(
    "source, app, screen",
    [
        ("from engine.facade import Store\n", False, False),
        ("from engine.store.rundir import valid_run_id\n", False, False),
        ("import engine.store.index\n", False, False),
        ("from engine import store\n", False, False),
        ("def f(rd: 'RunDir'): pass\n", False, False),
        ("x = facade.RunDir(p)\n", False, False),
        ("from engine.facade import diff_runs\n", True, False),
        ("facade.stop(s, rds)\n", True, False),
        ("h = self.app.store.home\n", True, True),
    ],
)
def test_the_scan_finds_each_way_past_the_service(source, app, screen):
    assert open_doors(source, app=app, screen=screen, wrapped=wrapped_by_service()) != []


def test_the_scan_lets_the_cli_call_the_facade_and_the_app_ask_the_service():
    cli = "from engine.facade import diff_runs, reconcile\nstore = Service(home).store\nfacade.stop(store, rds)\n"
    app = "from engine.facade import fmt_cell, parse_query\nrows = self.app.service.runs()\n"
    assert open_doors(cli, app=False, screen=False, wrapped=wrapped_by_service()) == []
    assert open_doors(app, app=True, screen=True, wrapped=wrapped_by_service()) == []
