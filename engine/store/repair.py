"""`advlc repair`: rebuild what a damaged run directory or index can still give, and say what was done.

For each run:
- config.json damaged or missing: rebuilt from .config.json.orig, its copy written at creation
  (or by the run process of a run made before that copy was kept), byte for byte; for a run
  without a readable copy, from the `config:` line the run process writes at the top of a
  detached run's log.txt and the run's row of the index, when both are there (provenance is then
  lost); otherwise the run stays listed as `corrupt`, with the reason, until the file is restored;
- status.json damaged or missing: rebuilt as `stopped` at the epoch of last.pt (so `advlc
  resume` finishes it), with an error saying it was rebuilt;
- metrics.json damaged: every record that can still be read, and has the right shape, is kept
  (a truncated file loses only its tail, a garbled record only itself);
- meta.json damaged: the fields that can still be read are kept;
- runtime.json damaged: emptied (the provenance of the run's starts is then unknown);
- a checkpoint that is not intact: named and left where it is (`advlc resume --from best` or
  `--from scratch` sets it aside; a missing last.pt would make a resume start over silently);
- temporary files of killed writers: removed.
Then the index is rebuilt. A file that parses but has the wrong shape (a string where a number
belongs) is damaged like one that does not parse. Each damaged file is replaced by
`engine.store.files.replace_keeping_aside`: the replacement is written first, the damaged file
keeps a second name `<name>.corrupt-<time>`, then the replacement takes its name; killed at any
instant, the name holds the damaged file or its replacement, and running `repair` again finishes
the job. Damaged files are never deleted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import CorruptFile
from engine.store.checkpoint_files import inspect as inspect_checkpoint
from engine.store.files import dumps, load_json, replace_keeping_aside
from engine.store.records import TABLE_RECORDS, ConfigRecord, Meta, MetricRecord, RuntimeRecord, Shape
from engine.store.index import Store
from engine.store.rundir import CONFIG_COPY, RunDir, run_folders


def _name(aside: Path | None) -> str:
    """The second name a damaged file was kept under (replace_keeping_aside returns None only when
    there was no file to keep)."""
    return aside.name if aside is not None else "nowhere: there was no file"


@dataclass
class Repair:
    """What `repair_run` found and did for one run."""

    run_id: str
    done: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    """Damage named but left as it is (a damaged checkpoint: `resume` offers the ways on)."""
    copied: bool = False
    """.config.json.orig was written from an intact config.json (a run made before it was kept)."""

    @property
    def ok(self) -> bool:
        return not self.unrecoverable


_TABLE = re.compile(r'^ "([^"\n]+)": \{', re.M)
_RECORD = re.compile(r'^  "(\d{1,12})": ', re.M)
_UNREADABLE = re.compile(r"[\udc80-\udcff\ufffd]")
"""A byte that was not UTF-8 (decoded with surrogateescape, or replaced)."""


def salvage_tables(text: str) -> dict[str, dict[str, dict]]:
    """The TinyDB tables of a damaged metrics.json as written by advlc (`json.dumps(indent=1)`:
    a table at one space of indent, each record at two): every record that parses completely,
    table by table, before and after any damaged one. A record is kept only when its JSON ends
    before the next record begins and holds no byte that was not UTF-8 (`text` decoded with
    errors="surrogateescape"), so a record that lost its closing brace, and so swallowed its
    successors, is dropped, and they are kept."""
    dec = json.JSONDecoder()
    out: dict[str, dict[str, dict]] = {}
    tables = [(m.group(1), m.start(), m.end()) for m in _TABLE.finditer(text)]
    for k, (name, _, pos) in enumerate(tables):
        end = tables[k + 1][1] if k + 1 < len(tables) else len(text)
        rows = out.setdefault(name, {})
        starts = [(m.group(1), m.start(), m.end()) for m in _RECORD.finditer(text, pos, end)]
        for j, (key, _, value) in enumerate(starts):
            limit = starts[j + 1][1] if j + 1 < len(starts) else end
            try:
                rec, stop = dec.raw_decode(text, value)
            except (ValueError, RecursionError):
                continue  # a garbled record, or the truncated tail
            if stop <= limit and isinstance(rec, dict) and not _UNREADABLE.search(text, value, stop):
                rows.setdefault(key, rec)
    return out


def _config_from_log(rd: RunDir, row: Mapping | None) -> dict | None:
    """config.json as the `config:` line of log.txt and the run's index row give it (None unless both do)."""
    if not rd.log_path.exists() or not row or row.get("state") == "corrupt" or not row.get("preset"):
        return None
    for line in rd.log_tail(10_000):
        if line.startswith("config: "):
            try:
                cfg = json.loads(line[len("config: ") :])
            except json.JSONDecodeError:
                continue
            if not isinstance(cfg, dict):
                continue
            cfg["run"] = {k: row.get(k) for k in ("preset", "label", "seed", "group", "created")} | {"id": rd.id}
            return cfg
    return None


def _repair_config(rd: RunDir, rep: Repair, row: Mapping | None) -> None:
    try:
        rd.written_config()  # config.json alone: a damaged runtime.json is not config.json's
        rep.copied = rd.keep_config_copy()
        return
    except CorruptFile as exc:
        damage = "missing" if not rd.config_path.exists() else "damaged"
        why = str(exc).split(": ", 1)[-1].split("; ")[0]  # what is wrong, without the file's hint
    data = rd.config_copy()
    source = f"{CONFIG_COPY}, the copy written at creation"
    if data is None:
        cfg = _config_from_log(rd, row)
        try:
            data = dumps(ConfigRecord.from_json(cfg, "config").to_json()).encode() if cfg is not None else None
        except Shape:
            data = None
        source = "log.txt's config line and the index (provenance lost)"
    if data is None:
        rep.unrecoverable.append(
            f"config.json is {damage} and cannot be rebuilt (no readable {CONFIG_COPY}, no "
            f"config line in log.txt): restore it from a backup" + (f" (it {why})" if damage == "damaged" else "")
        )
        return
    aside = replace_keeping_aside(rd.config_path, data)
    rd.keep_config_copy()
    rep.done.append(f"config.json was {damage}{f' (kept as {_name(aside)})' if aside else ''}: rebuilt from {source}")


def _checkpoint_epoch(rd: RunDir, rep: Repair) -> int:
    """The epoch of last.pt (0 when it is missing or damaged); damaged checkpoints are named."""
    epoch = 0
    for name in ("last", "best", "swa_best", "swa_end"):
        path = rd.ckpt(name)
        if not path.exists():
            continue
        try:
            info = inspect_checkpoint(path)
        except CorruptFile as exc:
            why = str(exc).split(": ", 1)[-1].split(";")[0]
            way = (
                f"`advlc resume {rd.id} --from best` or `--from scratch` sets it aside"
                if name == "last"
                else "commands that need it name it"
            )
            rep.found.append(f"checkpoints/{path.name} is damaged ({why}): left where it is; {way}")
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
    created = rd.written_config().run.created
    aside = replace_keeping_aside(
        rd.status_path,
        dumps(
            {
                "state": "stopped",
                "epoch": epoch,
                "created": created or time.time(),
                "ended": time.time(),
                "pid": None,
                "error": f"status.json was rebuilt by `advlc repair` from the checkpoint (epoch {epoch}); "
                f"`advlc resume {rd.id}` continues",
            }
        ).encode(),
    )
    rep.done.append(
        f"status.json was {'damaged (kept as ' + aside.name + ')' if aside else 'missing'}: "
        f"rebuilt as stopped at epoch {epoch}"
    )


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
        tables = salvage_tables(rd.metrics_path.read_bytes().decode("utf-8", "surrogateescape"))
    tables, dropped = _good_rows(tables)
    aside = replace_keeping_aside(rd.metrics_path, dumps(tables).encode())
    kept = ", ".join(f"{len(rows)} {name}" for name, rows in tables.items()) or "no records"
    rep.done.append(
        f"metrics.json was damaged (kept as {_name(aside)}): kept {kept}"
        + (f", dropped {dropped} record(s) of the wrong shape" if dropped else "")
    )


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
    kept: dict = {}
    for key, value in data.items() if isinstance(data, dict) else ():
        try:
            kept = Meta.from_json({**kept, key: value}).to_json()
        except Shape:
            if key == "tags" and isinstance(value, list):  # keep the tags that are words
                good = [t for t in value if isinstance(t, str)]
                good = [t for t in good if _is_tag(t)]
                kept = Meta.from_json({**kept, "tags": good}).to_json()
    aside = replace_keeping_aside(rd.meta_path, dumps(Meta.from_json(kept).to_json()).encode())
    names = ", ".join(k for k in kept if k != "updated") or "nothing"
    rep.done.append(f"meta.json was damaged (kept as {_name(aside)}): kept {names}")


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
    aside = replace_keeping_aside(rd.runtime_path, dumps(RuntimeRecord().to_json()).encode())
    rep.done.append(
        f"runtime.json was damaged (kept as {_name(aside)}): the provenance of the run's starts is now unknown"
    )


def repair_run(store: Store, rd: RunDir, row: Mapping | None = None) -> Repair:
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
    reps = [repair_run(store, rd, rows.get(rd.id)) for rd in (run_folders(store.runs_dir) if rds is None else rds)]
    copied = sum(r.copied for r in reps)
    if copied:
        notes.append(f"kept a copy of config.json ({CONFIG_COPY}) for {copied} run(s) made before it was kept")
    gone = store.sweep_temporary()
    if gone:
        notes.append(f"removed {len(gone)} temporary file(s) of killed writers")
    n = store.reindex()
    notes.append(f"index rebuilt from {n} run directories")
    return reps, notes
