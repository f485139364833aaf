"""`advlc export --tensorboard DIR`: runs of the store as TensorBoard event files.

TensorBoard is optional (``pip install 'advlc[tensorboard]'``): this module imports without it,
and writing raises `TensorBoardMissing` (a UserError: one line naming the pip command).

`write_run` takes plain dicts (config, epoch records, final evaluations, SWA records) and
writes them, all into ONE events file in ``log_dir / <tag folder>``:

* ``epoch/<key>``: every numeric value of every epoch record, at step ``record["epoch"]``
  (0-based, as advlc records it). ``None`` values, non-numbers, bools and the ``epoch`` key
  itself are skipped (a missing point, not a zero).
* ``swa/<key>``: the same for the SWA model's records.
* ``eval/<ckpt>/<attack>/clean_acc`` and ``.../robust_acc``: the final evaluations, at step
  ``record["epoch"]`` (0 when it is missing or None). When several records share
  (ckpt, attack) (e.g. different n or eps) the last one in the list is written.
* ``headline/best_robust_acc``, ``best_clean_acc`` (at the best epoch: highest PGD robust
  accuracy, the later epoch on ties, as the store and the reports pick it),
  ``headline/end_robust_acc``, ``end_clean_acc`` (the last evaluated epoch), and
  ``headline/swa_best_robust_acc`` / ``swa_end_robust_acc`` from the SWA records.
* HParams: the experiment summary (hparam names of this config + the fixed metric list
  `HPARAM_METRICS`) and the session-start info whose hparams are the config flattened to
  ``"section.key"``. bool, int, float and str stay as they are; None becomes ``"None"``;
  lists and the rest become their JSON text (``[12, 17]``). The session group is the tag, so
  every run is its own row. (The dashboard uses the first experiment summary it finds; all
  runs of one advlc version have the same resolved-config keys.)
* Text ``config``: the whole config as indented JSON in a fenced code block, at step 0.

Scalars are legacy ``simple_value`` summaries (float32, what ``SummaryWriter`` writes).

Writer: the ``tensorboard`` package's own APIs, which need neither TensorFlow nor torch
(``EventFileWriter``, ``tensorboard.compat.proto``, ``plugins.hparams.summary_v2``,
``plugins.text.summary_v2``). Not ``tensorboard.plugins.hparams.api`` or ``...hparams.summary``:
both ``import tensorflow``. Not ``torch.utils.tensorboard.SummaryWriter``: its ``add_hparams``
writes every call into a new sub-run, and it would tie the export to torch.

Tag -> folder: the tag is split at "/" and in every part any character outside
``[A-Za-z0-9._+=-]`` becomes "_"; empty and "." parts are dropped and a leading "." becomes "_"
(nothing can escape ``log_dir`` or be hidden). The parts are nested folders, so TensorBoard's
run name is the tag. `run_tag` names a run ``<preset>/<label>/seed<seed>-<run id>``, so
TensorBoard's run filter groups by preset or scheme and two runs never share a folder.

Re-exporting a run replaces it: the events files directly in its folder are deleted first
(sub-folders are left alone); ``overwrite=False`` raises FileExistsError instead.
"""

from __future__ import annotations

import json
import numbers
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from engine.errors import UserError
from engine.report.runs import select_runs
from engine.store.records import ConfigRecord, RunRecord
from engine.store.alerts import robust_key
from engine.store.summary import best_and_end

INSTALL_HINT = "pip install 'advlc[tensorboard]'"

HPARAM_METRICS = (
    "headline/best_robust_acc",
    "headline/end_robust_acc",
    "headline/best_clean_acc",
    "headline/end_clean_acc",
    "headline/swa_best_robust_acc",
    "headline/swa_end_robust_acc",
    "eval/best/aa/robust_acc",
    "eval/end/aa/robust_acc",
)
"""The HParams dashboard's metric columns (declared even when a run lacks some of them)."""

EVENTS_GLOB = "events.out.tfevents.*"


class TensorBoardMissing(UserError):
    """The optional ``tensorboard`` package is not installed (or does not import)."""


def _tensorboard():
    """The TensorBoard pieces used here, imported on first use."""
    try:  # optional dependency: advlc[tensorboard]
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import summary_v2 as hparams_summary
        from tensorboard.plugins.text import summary_v2 as text_summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as e:
        raise TensorBoardMissing(
            f"--tensorboard needs the optional 'tensorboard' package ({e}); install it with: {INSTALL_HINT}"
        ) from e
    return event_pb2, summary_pb2, hparams_summary, text_summary, EventFileWriter


# ------------------------------------------------------------------ plain-data helpers
def run_folder(tag: str) -> Path:
    """The folder (relative to the log dir) a tag is written to."""
    parts = []
    for raw in str(tag).replace("\\", "/").split("/"):
        part = re.sub(r"[^A-Za-z0-9._+=-]", "_", raw.strip())
        if part in ("", "."):
            continue
        if part.startswith("."):
            part = "_" + part[1:]
        parts.append(part)
    if not parts:
        raise ValueError(f"tag {tag!r} has no usable folder name")
    return Path(*parts)


def run_tag(config: ConfigRecord | Mapping[str, Any], run_id: str) -> str:
    """``<preset>/<label>/seed<seed>-<run id>`` (a preset given as a TOML path counts by its stem);
    `config` is the run's config record, or config.json's JSON."""
    run = config.run if isinstance(config, ConfigRecord) else RunRecord.from_json(config.get("run") or {}, "run")
    preset = str(run.preset or "unknown")
    if preset.endswith(".toml") or preset.startswith(("/", "~", ".")):
        preset = Path(preset).stem or "unknown"
    return f"{preset}/{run.label or 'run'}/seed{run.seed}-{run_id}"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _numeric_items(rec: Mapping[str, Any], skip: Iterable[str] = ("epoch",)):
    skip = set(skip)
    for k, v in rec.items():
        if k not in skip and _is_number(v):
            yield str(k), float(v)


def _step(rec: Mapping[str, Any], what: str, *, default: int | None = None) -> int:
    s = rec.get("epoch")
    if s is None and default is not None:
        return default
    if not _is_number(s) or int(s) != s:
        raise ValueError(f"{what} record without an integer 'epoch': {dict(rec)!r}")
    return int(s)


def _hparam_value(v: Any):
    if isinstance(v, (bool, str)):
        return v
    if _is_number(v):
        return int(v) if isinstance(v, int) else float(v)
    if v is None:
        return "None"
    try:
        return json.dumps(v, default=str)
    except (TypeError, ValueError):
        return str(v)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"section.key": value} with the HParams value rules of the module docstring."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = _hparam_value(v)
    return out


def _headline(epochs, swa, select_on: str = "test") -> list[tuple[int, str, float]]:
    out = []
    key = robust_key(select_on)  # best as the run selected it (test or validation split)
    for prefix, records in (("", epochs), ("swa_", swa)):
        best, end = best_and_end([r for r in records if _is_number(r.get("robust_acc"))], key)
        for which, rec in (("best", best), ("end", end)):
            for key in ("robust_acc",) if prefix else ("robust_acc", "clean_acc"):
                if rec is not None and _is_number(rec.get(key)):
                    out.append((int(rec["epoch"]), f"headline/{prefix}{which}_{key}", float(rec[key])))
    return out


def scalar_series(epochs, evals, swa, select_on: str = "test") -> list[tuple[int, str, float]]:
    """(step, tag, value) for every scalar, in write order (raises ValueError on a bad record)."""
    out: list[tuple[int, str, float]] = []
    for prefix, records in (("epoch", epochs), ("swa", swa)):
        for rec in records:
            step = _step(rec, prefix)
            out.extend((step, f"{prefix}/{k}", v) for k, v in _numeric_items(rec))
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for rec in evals:
        latest[(str(rec.get("ckpt")).replace("/", "_"), str(rec.get("attack")).replace("/", "_"))] = rec
    for (ckpt, attack), rec in latest.items():
        step = _step(rec, "eval", default=0)
        for key in ("clean_acc", "robust_acc"):
            if _is_number(rec.get(key)):
                out.append((step, f"eval/{ckpt}/{attack}/{key}", float(rec[key])))
    return out + _headline(list(epochs), list(swa), select_on)


# ------------------------------------------------------------------ the writer
def write_run(
    log_dir: Path,
    *,
    tag: str,
    config: dict,
    epochs: list[dict],
    evals: list[dict],
    swa: list[dict] = (),
    overwrite: bool = True,
) -> Path:
    """Write one run's TensorBoard events into ``log_dir / run_folder(tag)``; return that folder."""
    event_pb2, summary_pb2, hp, text_summary, EventFileWriter = _tensorboard()
    select_on = (config.get("train") or {}).get("select_on") or "test"
    scalars = scalar_series(epochs, evals, swa, select_on)  # validates before touching the disk
    hparams = flatten(config)
    run_dir = Path(log_dir) / run_folder(tag)
    old = sorted(run_dir.glob(EVENTS_GLOB)) if run_dir.is_dir() else []
    if old and not overwrite:
        raise FileExistsError(f"{run_dir} already holds TensorBoard events ({old[0].name})")
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in old:
        f.unlink()

    now = time.time()
    writer = EventFileWriter(str(run_dir), max_queue_size=1000)
    try:

        def emit(summary, step: int) -> None:
            writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))

        by_step: dict[int, list[tuple[str, float]]] = {}
        for step, name, value in scalars:
            by_step.setdefault(step, []).append((name, value))
        for step in sorted(by_step):
            emit(
                summary_pb2.Summary(
                    value=[summary_pb2.Summary.Value(tag=name, simple_value=value) for name, value in by_step[step]]
                ),
                step,
            )
        emit(
            hp.hparams_config_pb(
                hparams=[hp.HParam(name) for name in sorted(hparams)],
                metrics=[hp.Metric(m) for m in HPARAM_METRICS],
                time_created_secs=now,
            ),
            0,
        )
        emit(hp.hparams_pb(hparams, trial_id=str(tag), start_time_secs=now), 0)
        text = json.dumps(config, indent=2, default=str)
        emit(text_summary.text_pb("config", f"```json\n{text}\n```"), 0)
    finally:
        writer.close()
    return run_dir


def export_runs(store, log_dir: Path, *, run_ids=None, preset=None, group=None) -> list[tuple[str, str, Path]]:
    """Write the chosen runs (ids or unique prefixes, a preset or preset folder, a group) under
    `log_dir`, each replacing its earlier export; returns (run id, tag, folder) per run."""
    _tensorboard()  # say what to install before reading anything
    log_dir = Path(log_dir).expanduser()
    if log_dir.exists() and not log_dir.is_dir():
        raise UserError(f"--tensorboard {log_dir}: not a directory")
    done = []
    for rd in select_runs(store, run_ids=run_ids, preset=preset, group=group):
        config = rd.config()
        metrics = rd.metrics()
        tag = run_tag(config, rd.id)
        try:
            folder = write_run(
                log_dir,
                tag=tag,
                config=config.to_json(),
                epochs=metrics.get("epochs", []),
                evals=metrics.get("evals", []),
                swa=metrics.get("swa", []),
            )
        except OSError as exc:
            raise UserError(f"--tensorboard {log_dir}: cannot write ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise UserError(f"run {rd.id}: {rd.metrics_path}: {exc}") from None
        done.append((rd.id, tag, folder))
    return done


__all__ = [
    "HPARAM_METRICS",
    "INSTALL_HINT",
    "TensorBoardMissing",
    "export_runs",
    "flatten",
    "run_folder",
    "run_tag",
    "scalar_series",
    "write_run",
]
