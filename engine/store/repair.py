"""`advlc repair`: rebuild what a damaged run directory or index can still give, and say what was done.

For each run:
- config.json damaged: moved aside; rebuilt from the `config:` line the run process writes
  at the top of log.txt and the run's row of the index, when both are there (provenance is
  then lost); otherwise the run cannot be used until the file is restored;
- status.json damaged or missing: moved aside; rebuilt as `stopped` at the epoch of last.pt
  (so `advlc resume` finishes it), with an error saying it was rebuilt;
- metrics.json damaged: kept aside; every record that can still be read, and has the right
  shape, is kept (a truncated file loses only its tail, a garbled record only itself);
- meta.json damaged: kept aside; the fields that can still be read are kept;
- runtime.json damaged: kept aside (the provenance of the run's starts is then unknown);
- a checkpoint that is not intact: moved aside (resume then offers --from best / scratch);
- temporary files of killed writers: removed.
Then the index is rebuilt. A file that parses but has the wrong shape (a string where a number
belongs) is damaged like one that does not parse. Damaged files are copied to
`<name>.corrupt-<time>` and then replaced atomically, so the run's file is never missing, and never
deleted.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import CorruptFile
from engine.store.checkpoint_files import inspect as inspect_checkpoint
from engine.store.files import copy_aside, load_json, move_aside, write_json
from engine.store.records import TABLE_RECORDS, ConfigRecord, Meta, MetricRecord, RuntimeRecord, Shape
from engine.store.index import Store
from engine.store.rundir import RunDir


@dataclass
class Repair:
    """What `repair_run` found and did for one run."""

    run_id: str
    done: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unrecoverable


def salvage_tables(text: str) -> dict[str, dict[str, dict]]:
    """The TinyDB tables of a (possibly truncated) metrics.json as written by advlc
    (`json.dumps(indent=1)`): every record that parses completely, table by table."""
    dec = json.JSONDecoder()
    out: dict[str, dict[str, dict]] = {}
    starts = [(m.group(1), m.end()) for m in re.finditer(r'^ "([^"\n]+)": \{', text, re.M)]
    for k, (name, pos) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) else len(text)
        rows = out.setdefault(name, {})
        for m in re.finditer(r'^  "(\d+)": ', text[pos:end], re.M):
            try:
                rec, _ = dec.raw_decode(text, pos + m.end())
            except json.JSONDecodeError:
                continue                    # a garbled record, or the truncated tail
            if isinstance(rec, dict):
                rows[m.group(1)] = rec
    return out


def _config_from_log(rd: RunDir, row: dict | None) -> dict | None:
    if not rd.log_path.exists() or not row:
        return None
    for line in rd.log_tail(10_000):
        if line.startswith("config: "):
            try:
                cfg = json.loads(line[len("config: "):])
            except json.JSONDecodeError:
                continue
            cfg["run"] = {k: row.get(k) for k in ("preset", "label", "seed", "group", "created")} | {"id": rd.id}
            return cfg
    return None


def _repair_config(rd: RunDir, rep: Repair, row: dict | None) -> None:
    try:
        rd.config()
        return
    except CorruptFile:
        pass
    cfg = _config_from_log(rd, row)
    if cfg is None:
        rep.unrecoverable.append(f"config.json is damaged and cannot be rebuilt (no config line in log.txt): "
                                 f"restore it from a backup")
        return
    try:
        ConfigRecord.from_json(cfg)
    except Shape as exc:
        rep.unrecoverable.append(f"config.json is damaged and log.txt's config line is too ({exc}): "
                                 f"restore it from a backup")
        return
    aside = copy_aside(rd.config_path)
    write_json(rd.config_path, cfg)
    rep.done.append(f"config.json was damaged (kept as {aside.name}): rebuilt from log.txt's config line and "
                    f"the index (provenance lost)")


def _checkpoint_epoch(rd: RunDir, rep: Repair) -> int:
    epoch = 0
    for name in ("last", "best", "swa_best", "swa_end"):
        path = rd.ckpt(name)
        if not path.exists():
            continue
        try:
            info = inspect_checkpoint(path)
        except CorruptFile as exc:
            aside = move_aside(path)
            rep.done.append(f"checkpoints/{path.name} is damaged ({str(exc).split(': ', 1)[1].split(';')[0]}): "
                            f"kept as {aside.name}")
            continue
        if name == "last":
            epoch = int(info.get("epoch") or 0)
    return epoch


def _repair_status(rd: RunDir, rep: Repair, epoch: int) -> None:
    try:
        if rd.status_path.exists():
            rd.status()
            return
    except CorruptFile:
        pass
    aside = copy_aside(rd.status_path) if rd.status_path.exists() else None
    created = rd.config().run.created
    write_json(rd.status_path, {
        "state": "stopped", "epoch": epoch, "created": created or time.time(), "ended": time.time(), "pid": None,
        "error": f"status.json was rebuilt by `advlc repair` from the checkpoint (epoch {epoch}); "
                 f"`advlc resume {rd.id}` continues"})
    rep.done.append(f"status.json was {'damaged (kept as ' + aside.name + ')' if aside else 'missing'}: "
                    f"rebuilt as stopped at epoch {epoch}")


def _good_rows(tables: dict) -> tuple[dict, int]:
    """Only the rows of the right shape (and the number dropped)."""
    out, dropped = {}, 0
    for name, rows in tables.items():
        if not isinstance(rows, dict):
            dropped += 1
            continue
        cls = TABLE_RECORDS.get(name, MetricRecord)
        keep = {}
        for key, rec in rows.items():
            try:
                if not (isinstance(key, str) and key.isdigit() and len(key) <= 12):
                    raise Shape(f"{name}.{key}", key, "must be a number")
                keep[key] = cls.from_json(rec, f"{name}.{key}").to_json()
            except Shape:
                dropped += 1
        out[name] = keep
    return out, dropped


def _repair_metrics(rd: RunDir, rep: Repair) -> None:
    if not rd.metrics_path.exists():
        return
    try:
        rd.metrics()
        return
    except CorruptFile:
        pass
    try:
        data = load_json(rd.metrics_path)
        tables = data if isinstance(data, dict) else {}
    except CorruptFile:
        tables = salvage_tables(rd.metrics_path.read_bytes().decode("utf-8", "replace"))
    tables, dropped = _good_rows(tables)
    aside = copy_aside(rd.metrics_path)
    write_json(rd.metrics_path, tables)
    kept = ", ".join(f"{len(rows)} {name}" for name, rows in tables.items()) or "no records"
    rep.done.append(f"metrics.json was damaged (kept as {aside.name}): kept {kept}"
                    + (f", dropped {dropped} record(s) of the wrong shape" if dropped else ""))


def _repair_meta(rd: RunDir, rep: Repair) -> None:
    """Keep each field of meta.json that can still be read."""
    if not rd.meta_path.exists():
        return
    try:
        rd.meta()
        return
    except CorruptFile:
        pass
    try:
        data = load_json(rd.meta_path)
    except CorruptFile:
        data = None
    kept = {}
    for key, value in (data.items() if isinstance(data, dict) else ()):
        try:
            kept = Meta.from_json({**kept, key: value}).to_json()
        except Shape:
            if key == "tags" and isinstance(value, list):       # keep the tags that are words
                good = [t for t in value if isinstance(t, str)]
                good = [t for t in good if _is_tag(t)]
                kept = Meta.from_json({**kept, "tags": good}).to_json()
    aside = copy_aside(rd.meta_path)
    write_json(rd.meta_path, Meta.from_json(kept).to_json())
    names = ", ".join(k for k in kept if k != "updated") or "nothing"
    rep.done.append(f"meta.json was damaged (kept as {aside.name}): kept {names}")


def _is_tag(t: str) -> bool:
    try:
        Meta.from_json({"tags": [t]})
        return True
    except Shape:
        return False


def _repair_runtime(rd: RunDir, rep: Repair) -> None:
    if not rd.runtime_path.exists():
        return
    try:
        rd.runtime()
        return
    except CorruptFile:
        pass
    aside = copy_aside(rd.runtime_path)
    write_json(rd.runtime_path, RuntimeRecord().to_json())
    rep.done.append(f"runtime.json was damaged (kept as {aside.name}): the provenance of the run's starts is "
                    f"now unknown")


def repair_run(store: Store, rd: RunDir, row: dict | None = None) -> Repair:
    """Repair one run directory (see the module doc)."""
    rep = Repair(rd.id)
    _repair_config(rd, rep, row)
    if rep.unrecoverable:
        return rep
    _repair_runtime(rd, rep)
    epoch = _checkpoint_epoch(rd, rep)
    _repair_metrics(rd, rep)
    _repair_status(rd, rep, epoch)
    _repair_meta(rd, rep)
    return rep


def repair(store: Store, rds: list[RunDir] | None = None) -> tuple[list[Repair], list[str]]:
    """Repair these runs (all when None), then the index. Returns (each run's repair, store-level notes)."""
    notes = []
    rows = {}
    try:
        rows = {r["id"]: r for r in store.index()}
    except OSError:
        pass
    if store.repaired:
        notes.append(f"index.json was damaged (kept as {Path(store.repaired).name})")
    reps = [repair_run(store, rd, rows.get(rd.id)) for rd in (store.run_dirs() if rds is None else rds)]
    gone = store.sweep_temporary()
    if gone:
        notes.append(f"removed {len(gone)} temporary file(s) of killed writers")
    n = store.reindex()
    notes.append(f"index rebuilt from {n} run directories")
    return reps, notes
