"""The records of a run directory, typed and checked on every read.

Each file of a run directory is read into one of these records; a file that parses as JSON but
has the wrong shape or types is *damaged* exactly like one that does not parse: `parse` raises
`CorruptFile` naming the file and the field (`status.json: pid = "abc": must be an integer`).

    config.json    ConfigRecord   the resolved config sections + RunRecord ("run") + Provenance
                                  (written once, at creation)
    runtime.json   RuntimeRecord  what a run learns when it runs: the provenance of each start,
                                  an experiment's resolved source, a device retargeted by the GPU queue
    status.json    Status         state, process, heartbeat, progress; `launch` is a tagged union:
                                  LocalLaunch | GpuQueueLaunch | SlurmLaunch
    meta.json      Meta           title, tags, note, archived
    metrics.json   MetricRecord   rows of the tables `epochs`, `swa`, `evals`, `points`: metric name ->
                                  number (or short text), read-only mappings (their metric sets are open)
    index.json     MetricRecord   one summary row per run (engine.store.summary), checked the same way

Unknown keys are kept (`extra`) and written back unchanged, so a newer advlc's files survive an
older one. The checks are the point: nothing read from a file is trusted as written.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Union

from engine.errors import CorruptFile
from engine.store.states import STATES

JSON_MAX_DEPTH = 32
"""How deep a free-form JSON value (a config section's list, Slurm params) may nest."""


class Shape(ValueError):
    """A value of the wrong shape: `path` (e.g. "launch.pid") and what is allowed."""

    def __init__(self, path: str, value: Any, allowed: str):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        super().__init__(f"{path} = {shown}: {allowed}")


# ------------------------------------------------------------------------------ checking values
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _json_value(v, path: str, depth: int = 0) -> Any:
    """Any JSON value, bounded in depth, floats finite or not (JSON has no NaN, but Python writes it)."""
    if depth > JSON_MAX_DEPTH:
        raise Shape(path, "…", f"nested deeper than {JSON_MAX_DEPTH}")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [_json_value(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v)]
    if isinstance(v, dict):
        return {str(k): _json_value(x, f"{path}.{k}", depth + 1) for k, x in v.items()}
    raise Shape(path, v, "must be a JSON value")


def check(tp, v, path: str):
    """`v` when it has type `tp` (int, float, str, bool, Any, X | None, list[X], dict[str, X],
    a record class, a union of launch records); Shape otherwise. Ints are accepted as floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return check(rest[0], v, path)
        if all(isinstance(a, type) and hasattr(a, "TAG") for a in rest):
            return _tagged(rest, v, path)
        raise TypeError(f"unsupported union {tp}")
    if tp is Any:
        return _json_value(v, path)
    if tp is bool:
        if not isinstance(v, bool):
            raise Shape(path, v, "must be true or false")
        return v
    if tp is int:
        if not _is_int(v):
            raise Shape(path, v, "must be an integer")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Shape(path, v, "must be a number")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise Shape(path, v, "must be a string")
        return v
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(v, list):
            raise Shape(path, v, "must be a list")
        return [check(item, x, f"{path}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(v, dict):
            raise Shape(path, v, "must be an object")
        return {k: check(item, x, f"{path}.{k}") for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(v, path)
    raise TypeError(f"unsupported type {tp}")


def _tagged(classes: list, v, path: str):
    if not isinstance(v, dict):
        raise Shape(path, v, "must be an object")
    tags = {c.TAG: c for c in classes}
    for c in classes:
        cls = c.claims(v)
        if cls is not None:
            return cls.from_json(v, path)
    raise Shape(f"{path}.executor", v.get("executor"), f"must be one of {', '.join(sorted(tags))}")


def _to_json(v):
    """A field's value as JSON: records (also inside lists and objects) become objects."""
    if hasattr(v, "to_json"):
        return v.to_json()
    if isinstance(v, dict):
        return {k: _to_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_to_json(x) for x in v]
    return v


class Record:
    """A dataclass read from JSON with its fields checked; unknown keys kept in `extra`."""

    ALIASES: typing.ClassVar[dict] = {}
    __dataclass_fields__: typing.ClassVar[dict[str, Any]]  # every record is a @dataclass
    extra: dict
    """Old key -> field name: how files written by earlier advlc versions are read."""

    @classmethod
    def from_json(cls, data, path: str = ""):
        if not isinstance(data, dict):
            raise Shape(path or cls.__name__, data, "must be an object")
        hints = typing.get_type_hints(cls)
        kw, extra = {}, {}
        data = dict(data)
        for old, new in cls.ALIASES.items():
            if old in data and new not in data:
                data[new] = data.pop(old)
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        for key, value in data.items():
            where = f"{path}.{key}" if path else key
            if key in names:
                kw[key] = check(hints[key], value, where)
            else:
                extra[key] = _json_value(value, where)
        for f in dataclasses.fields(cls):
            if (
                f.name not in kw
                and f.name != "extra"
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                raise Shape(f"{path}.{f.name}" if path else f.name, None, "is missing")
        obj = cls(**kw)
        obj.extra = extra
        obj.validate(path)
        return obj

    def validate(self, path: str) -> None:
        """Checks beyond types (allowed values); raise Shape."""

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            out[f.name] = _to_json(getattr(self, f.name))
        out.update(getattr(self, "extra", {}) or {})
        return out

    def replace(self, **changes):
        """A copy with `changes` (each checked like a value read from a file)."""
        hints = typing.get_type_hints(type(self))
        changes = {self.ALIASES.get(k, k): v for k, v in changes.items()}
        for key, value in changes.items():
            if key not in hints or key == "extra":
                raise TypeError(f"{type(self).__name__} has no field {key!r}")
            if isinstance(value, Record):
                continue
            changes[key] = check(hints[key], value, key)
        obj = dataclasses.replace(self, **changes)
        obj.extra = dict(getattr(self, "extra", {}) or {})
        obj.validate("")
        return obj


def parse(cls, data, path) -> Any:
    """`cls.from_json(data)`, a wrong shape becoming CorruptFile naming the file `path`."""
    try:
        return cls.from_json(data, "")
    except Shape as exc:
        raise CorruptFile(path, f"has a wrong value: {exc}", hint_for(path)) from None


def hint_for(path) -> str:
    """What to do about a damaged store file, naming the run it belongs to."""
    name = Path(path).name
    hint = {
        "config.json": "`advlc repair RUN` rebuilds it from .config.json.orig, the copy kept at creation "
        "(the damaged file is kept aside)",
        "status.json": "run `advlc repair RUN` to rebuild it from the checkpoint and the log",
        "metrics.json": "run `advlc repair RUN` to keep the records that can still be read",
        "meta.json": "run `advlc repair RUN` (it keeps the fields that can be read) or delete the file",
        "runtime.json": "run `advlc repair RUN` (it moves the file aside; the run's provenance is then unknown)",
        "index.json": "run `advlc runs --reindex` (the index is rebuilt from the run directories)",
    }.get(name, "run `advlc repair`")
    return hint.replace("RUN", Path(path).parent.name) if name != "index.json" else hint


# ------------------------------------------------------------------------------ status.json
@dataclass
class Process(Record):
    """A process on a host: who launched a run, or a Slurm controller."""

    pid: int
    pid_create_time: float | None = None
    host: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def validate(self, path):
        if self.pid <= 0:
            raise Shape(f"{path}.pid" if path else "pid", self.pid, "must be a positive process id")


@dataclass
class LocalLaunch(Record):
    """Started at once on this host, detached (`threads`: its share of the CPU cores)."""

    TAG: typing.ClassVar[str] = "local"
    executor: str = "local"
    host: str | None = None
    threads: int | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def claims(cls, data: dict):
        return cls if data.get("executor") == "local" and not data.get("gpus") else None

    def describe(self, status: "Status") -> str:
        """Where the run is, in a few words (`advlc run --detach`, `advlc resume`)."""
        return f"pid {status.pid}" if status.pid else status.state


@dataclass
class GpuQueueLaunch(Record):
    """Waits `queued` for a lease on one of `gpus` of `host` (engine.launch.executors.gpuqueue)."""

    TAG: typing.ClassVar[str] = "gpuqueue"
    executor: str = "gpuqueue"
    host: str | None = None
    gpus: list[int] = field(default_factory=list)
    slots_per_gpu: int = 1
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def claims(cls, data: dict):
        # format 1 wrote {"executor": "local", "gpus": [...]} for the GPU queue
        return (
            cls
            if data.get("executor") == "gpuqueue" or (data.get("executor") == "local" and data.get("gpus"))
            else None
        )

    def validate(self, path):
        self.executor = "gpuqueue"
        if not self.gpus or any(g < 0 for g in self.gpus):
            raise Shape(f"{path}.gpus" if path else "gpus", self.gpus, "must be a non-empty list of GPU indices")
        if self.slots_per_gpu < 1:
            raise Shape(f"{path}.slots_per_gpu" if path else "slots_per_gpu", self.slots_per_gpu, "must be >= 1")

    def describe(self, status: "Status") -> str:
        """Its process and GPU once it runs, else the GPUs it waits for."""
        if status.state == "running" and status.pid:
            return f"pid {status.pid}" + (f" GPU {status.gpu}" if status.gpu is not None else "")
        return f"waiting for a GPU of {self.gpus}" if status.state == "queued" else status.state


@dataclass
class SlurmLaunch(Record):
    """Submitted through submitit; `cluster` "local" is submitit's local executor (tests, laptops)."""

    TAG: typing.ClassVar[str] = "slurm"
    CLUSTERS: typing.ClassVar[tuple] = ("slurm", "local")
    """The clusters a Slurm launch may use, the default first."""
    LOCAL_CLUSTER: typing.ClassVar[str] = "local"
    executor: str = "slurm"
    cluster: str = "slurm"
    host: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    sbatch: dict[str, Any] | None = None
    controller_pid: int | None = None
    controller_create_time: float | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def claims(cls, data: dict):
        return cls if data.get("executor") == "slurm" else None

    def validate(self, path):
        if self.cluster not in self.CLUSTERS:
            raise Shape(f"{path}.cluster" if path else "cluster", self.cluster, f"must be {' or '.join(self.CLUSTERS)}")

    @property
    def local_cluster(self) -> bool:
        """Is the job run by submitit's LocalExecutor on the submitting host (no squeue to ask)?"""
        return self.cluster == self.LOCAL_CLUSTER

    def describe(self, status: "Status") -> str:
        """Its job and what it asked of Slurm, e.g. "Slurm job 12 (partition debug, 60 min: the
        limit of partition debug (1:00:00), no GPU)"."""
        a = self.sbatch or {}
        if not a:
            return f"Slurm job {self.job_id}"
        gpus = f"{a['gpus']} GPU{'s' if a['gpus'] != 1 else ''}" if a.get("gpus") else "no GPU"
        when = f"{a.get('time')} min" + ("" if a.get("time_from") == "given" else f": {a.get('time_from')}")
        return f"Slurm job {self.job_id} (partition {a.get('partition') or 'default'}, {when}, {gpus})"


Launch = Union[LocalLaunch, GpuQueueLaunch, SlurmLaunch]


@dataclass
class EarlyStop(Record):
    """Why a run finished before its last epoch (train.stop_on_overfit): robust overfitting on the
    selection split since epoch `onset`, held for the patience up to epoch `epoch`."""

    epoch: int
    onset: int
    planned: int
    """train.epochs: the run would have trained epochs 0 .. planned - 1."""
    split: str = "test"
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def saved_epochs(self) -> int:
        return self.planned - (self.epoch + 1)

    def text(self) -> str:
        on = " (validation)" if self.split == "val" else ""
        return (
            f"stopped early at epoch {self.epoch}: robust overfitting{on} since epoch {self.onset}; "
            f"{self.saved_epochs} of {self.planned} epochs not trained"
        )

    def validate(self, path):
        if not 0 <= self.onset <= self.epoch < self.planned:
            raise Shape(
                f"{path}.epoch" if path else "epoch",
                self.epoch,
                f"must satisfy 0 <= onset ({self.onset}) <= epoch < planned ({self.planned})",
            )
        if self.split not in ("test", "val"):
            raise Shape(f"{path}.split" if path else "split", self.split, "must be test or val")


@dataclass
class Status(Record):
    """status.json: the state (changed only by engine.store.states.transition) and progress."""

    ALIASES: typing.ClassVar[dict] = {"launcher": "launched_by"}
    state: str = "queued"
    created: float | None = None
    launched_by: Process | None = None
    """The advlc process that created the run (a run whose creator died before starting it is lost)."""
    launch: LocalLaunch | GpuQueueLaunch | SlurmLaunch | None = None
    pid: int | None = None
    pid_create_time: float | None = None
    host: str | None = None
    gpu: int | None = None
    heartbeat: float | None = None
    heartbeat_s: float | None = None
    started: float | None = None
    ended: float | None = None
    queued_at: float | None = None
    requeued: float | None = None
    resumed: float | None = None
    resume_from: str | None = None
    resume_epoch: int | None = None
    error: str | None = None
    epoch: int = 0
    batch: int = 0
    batches: int | None = None
    point: int | None = None
    """An experiment run's progress: points done of `points` planned."""
    points: int | None = None
    early_stop: EarlyStop | None = None
    """Set when the run ended early on robust overfitting (train.stop_on_overfit)."""
    extra: dict = field(default_factory=dict, repr=False)

    def validate(self, path):
        if self.state not in STATES:
            raise Shape("state", self.state, f"must be one of {', '.join(STATES)}")
        if self.pid is not None and self.pid <= 0:
            raise Shape("pid", self.pid, "must be a positive process id")
        if self.epoch < 0 or self.batch < 0:
            raise Shape("epoch" if self.epoch < 0 else "batch", min(self.epoch, self.batch), "must be >= 0")
        if self.resume_from not in (None, "last", "best", "scratch"):
            raise Shape("resume_from", self.resume_from, "must be last, best or scratch")


# ------------------------------------------------------------------------------ meta.json
TAG_MAX = 64


@dataclass
class Meta(Record):
    """meta.json: what people say about a run (written under the store's lock, never by the run)."""

    title: str | None = None
    tags: list[str] = field(default_factory=list)
    note: str | None = None
    archived: bool = False
    updated: float | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def validate(self, path):
        for i, t in enumerate(self.tags):
            if not t or len(t) > TAG_MAX or any(c.isspace() for c in t):
                raise Shape(f"tags[{i}]", t, f"must be a word of 1 to {TAG_MAX} characters without spaces")


# ------------------------------------------------------------------------------ config.json
@dataclass
class Origin(Record):
    """How a run was made (engine.config.origin): the overrides as given and as resolved."""

    overrides: list[str] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    """The resolved overrides as one short line, "attack.eps=0.05, train.epochs=1"."""
    command: str | None = None
    preset_sha256: str | None = None
    derived: bool = False
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class TeacherLink(Record):
    """run.teachers.<role>: the teacher run a distillation run loads."""

    preset: str
    run: str
    which: str = "best"
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class RunRecord(Record):
    """config.json's "run" block: the run's identity and how it was made."""

    id: str | None = None
    preset: str | None = None
    label: str | None = None
    seed: int | None = None
    group: str | None = None
    point: dict[str, Any] = field(default_factory=dict)
    created: float | None = None
    role: str | None = None
    teachers: dict[str, TeacherLink] = field(default_factory=dict)
    requested_device: str | None = None
    origin: Origin | None = None
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Provenance(Record):
    """Where and with what code a run (or one start of it) ran (engine.run.provenance)."""

    device: str | None = None
    device_name: str | None = None
    host: str | None = None
    commit: str | None = None
    dirty: bool | None = None
    diff_sha256: str | None = None
    version: str | None = None
    python: str | None = None
    torch: str | None = None
    cuda: str | None = None
    extra: dict = field(default_factory=dict, repr=False)


SECTIONS = ("preset", "data", "model", "attack", "method", "train", "eval", "swa", "experiment")
"""The config sections config.json may hold (engine.config.schema.RunConfig)."""


@dataclass
class SourceRecord(Record):
    """An experiment's resolved source run (what its checkpoint was)."""

    run: str
    preset: str | None = None
    label: str | None = None
    ckpt: str | None = None
    epoch: int | None = None
    path: str | None = None
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class ConfigRecord:
    """config.json: the resolved config sections (a RunConfig's JSON; checked here for shape,
    by engine.config.schema.from_json for meaning), the run block and the creation provenance."""

    sections: dict[str, dict]
    run: RunRecord
    provenance: Provenance | None = None
    source: SourceRecord | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data, path: str = "") -> "ConfigRecord":
        if not isinstance(data, dict):
            raise Shape(path or "config", data, "must be an object")
        sections, extra = {}, {}
        for key, value in data.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise Shape(key, value, f"must be a table of the [{key}] section")
                sections[key] = {str(k): _json_value(v, f"{key}.{k}") for k, v in value.items()}
            elif key not in ("run", "provenance", "source"):
                extra[key] = _json_value(value, key)
        run = RunRecord.from_json(data["run"] if "run" in data else {}, "run")
        prov = Provenance.from_json(data["provenance"], "provenance") if data.get("provenance") is not None else None
        src = SourceRecord.from_json(data["source"], "source") if data.get("source") is not None else None
        return cls(sections, run, prov, src, extra)

    def to_json(self) -> dict:
        out = dict(self.sections)
        out["run"] = self.run.to_json()
        if self.provenance is not None:
            out["provenance"] = self.provenance.to_json()
        if self.source is not None:
            out["source"] = self.source.to_json()
        out.update(self.extra)
        return out

    def section(self, name: str) -> dict:
        """One config section ({} when absent)."""
        return self.sections.get(name) or {}

    def value(self, dotted: str, default=None):
        """A config value by "section.key"."""
        section, _, key = dotted.partition(".")
        return self.section(section).get(key, default)

    @property
    def method(self) -> str | None:
        v = self.value("method.name")
        return v if isinstance(v, str) else None

    @property
    def is_experiment(self) -> bool:
        return bool(self.value("experiment.kind"))


@dataclass
class RuntimeRecord(Record):
    """runtime.json: what a run learns when it runs (config.json itself is never rewritten).

    `starts` holds the provenance of each start of the run process (the first, then each resume
    or requeue on possibly another machine); `source` an experiment's resolved source run with
    the sections it takes from it; `label` an experiment's label; `device` the device a GPU queue
    retargeted the run to; `origin` an origin derived for a run made before origins were recorded."""

    starts: list[Provenance] = field(default_factory=list)
    source: SourceRecord | None = None
    source_sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    label: str | None = None
    device: str | None = None
    origin: Origin | None = None
    """The origin derived once for a run made before origins were recorded (engine.run.origins)."""
    extra: dict = field(default_factory=dict, repr=False)


def effective(config: ConfigRecord, runtime: RuntimeRecord | None) -> ConfigRecord:
    """config.json as the run ran it: an experiment's source sections and label, a retargeted
    device and the latest start's provenance laid over the config written at creation."""
    if runtime is None:
        return config
    sections = {k: dict(v) for k, v in config.sections.items()}
    for name, table in runtime.source_sections.items():
        sections[name] = dict(table)
    if runtime.device:
        sections.setdefault("train", {})["device"] = runtime.device
    run = config.run
    if runtime.label or (run.origin is None and runtime.origin is not None):
        run = dataclasses.replace(run, label=runtime.label or run.label, origin=run.origin or runtime.origin)
        run.extra = dict(config.run.extra)
    prov = runtime.starts[-1] if runtime.starts else config.provenance
    return ConfigRecord(sections, run, prov, runtime.source or config.source, dict(config.extra))


# ------------------------------------------------------------------------------ metrics and index rows
class MetricRecord(Mapping):
    """One row of a metrics table or of the index: metric name -> a JSON scalar, read-only.

    Numbers are finite-or-not floats/ints, text is short; a nested value or a required key of the
    wrong type is a wrong shape. Mapping access (`rec["robust_acc"]`, `rec.get("hs")`) because
    the set of metrics is open: eval.extra adds names."""

    REQUIRED: dict[str, type] = {}
    TYPED: dict[str, tuple] = {}
    """Known keys and the types their values may have (None always allowed unless REQUIRED)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict):
        self._data = data

    @classmethod
    def from_json(cls, data, path: str = ""):
        if not isinstance(data, dict):
            raise Shape(path or "record", data, "must be an object")
        out = {}
        for key, value in data.items():
            where = f"{path}.{key}" if path else key
            if key in cls.REQUIRED:
                tp = cls.REQUIRED[key]
                if value is None:
                    raise Shape(where, value, "is missing")
                out[key] = check(tp, value, where)
            elif key in cls.TYPED and value is not None:
                if not any(_fits(tp, value) for tp in cls.TYPED[key]):
                    raise Shape(where, value, f"must be {' or '.join(_NAMES[t] for t in cls.TYPED[key])}")
                out[key] = value
            elif isinstance(value, (list, dict)):
                out[key] = _json_value(value, where, JSON_MAX_DEPTH - 4)
            elif value is None or isinstance(value, (bool, int, float, str)):
                out[key] = value
            else:
                raise Shape(where, value, "must be a number, text, true/false or null")
        for key in cls.REQUIRED:
            if key not in out:
                raise Shape(f"{path}.{key}" if path else key, None, "is missing")
        return cls(out)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"{type(self).__name__}({self._data!r})"

    def __eq__(self, other):
        return dict(self._data) == (dict(other) if isinstance(other, Mapping) else other)

    def to_json(self) -> dict:
        return dict(self._data)


_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true/false", list: "a list"}


def _fits(tp, v) -> bool:
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is int:
        return _is_int(v)
    return isinstance(v, tp)


_NUM = (float,)


EPOCH_KEYS = (
    "epoch",
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
    "eval_time_s",
    "images_per_s",
)
"""The keys of an epoch record, in the order the run process writes them (engine.run.trainer)."""


class EpochRecord(MetricRecord):
    """A row of `epochs` or `swa`: one evaluated (or trained) epoch."""

    REQUIRED = {"epoch": int}
    TYPED = {k: _NUM for k in EPOCH_KEYS[1:]}


class EvalRecord(MetricRecord):
    """A row of `evals`: one final evaluation (checkpoint x attack)."""

    REQUIRED = {"ckpt": str, "attack": str}
    TYPED = {
        "n": (int,),
        "eps": _NUM,
        "clean_acc": _NUM,
        "robust_acc": _NUM,
        "epoch": (int,),
        "time_s": _NUM,
        "implementation": (str,),
        "device": (str,),
        "created": _NUM,
    }


class PointRecord(MetricRecord):
    """A row of `points`: one point of an experiment (Fig. 4, A.1)."""


class IndexRow(MetricRecord):
    """A row of index.json (engine.store.summary.summarize): one run's summary."""

    REQUIRED = {"id": str, "state": str}
    TYPED = {
        "seed": (int,),
        "epoch": (int,),
        "epochs": (int,),
        "best_epoch": (int,),
        "created": _NUM,
        "tags": (list,),
        "archived": (bool,),
        "title": (str,),
        "note": (str,),
        "preset": (str,),
        "label": (str,),
        "group": (str,),
        "path": (str,),
        "end_epoch": (int,),
        "v": (int,),
        **{
            k: _NUM
            for k in (
                "best_clean_acc",
                "best_robust_acc",
                "end_clean_acc",
                "end_robust_acc",
                "clean_diff",
                "robust_diff",
                "end_ig",
                "end_hs",
                "epoch_time_s_last",
                "epoch_time_s_mean",
                "eval_time_s_mean",
                "best_val_robust_acc",
                "best_val_clean_acc",
                "test_best_clean_acc",
                "test_best_robust_acc",
            )
        },
        "test_best_epoch": (int,),
        "overfit_epoch": (int,),
        "catastrophic_epoch": (int,),
        "stopped_early_at": (int,),
        "epochs_saved": (int,),
        "select_on": (str,),
    }
    """The summary keys (engine.store.summary.SUMMARY_KEYS) are numbers: sorting and `--where` compare them."""

    @classmethod
    def from_json(cls, data, path: str = ""):
        row = super().from_json(data, path)
        tags = row.get("tags")
        if tags is not None and not all(isinstance(t, str) for t in tags):
            raise Shape(f"{path}.tags" if path else "tags", tags, "must be a list of words")
        return row


TABLE_RECORDS = {"epochs": EpochRecord, "swa": EpochRecord, "evals": EvalRecord, "points": PointRecord}


def table_records(data, name: str, path, cls=None) -> list[MetricRecord]:
    """The rows of TinyDB table `name` in a parsed TinyDB file (metrics.json, index.json),
    checked, in insertion order."""
    cls = cls or TABLE_RECORDS.get(name, MetricRecord)
    if data is not None and not isinstance(data, dict):
        raise CorruptFile(path, "has a wrong value: must be an object of tables", hint_for(path))
    rows = (data or {}).get(name)
    if rows is None:
        return []
    if not isinstance(rows, dict):
        raise CorruptFile(
            path, f"has a wrong value: table {name} must be an object of numbered records", hint_for(path)
        )
    out = []
    for key in rows:
        if not (isinstance(key, str) and key.isdigit() and len(key) <= 12):
            raise CorruptFile(
                path, f"has a wrong value: table {name}: record id {key!r} must be a number", hint_for(path)
            )
    for key in sorted(rows, key=int):
        try:
            out.append(cls.from_json(rows[key], f"{name}.{key}"))
        except Shape as exc:
            raise CorruptFile(path, f"has a wrong value: {exc}", hint_for(path)) from None
    return out


def finite(v) -> float | None:
    """A metric as a finite float, or None (NaN/inf read back from a diverged run)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
