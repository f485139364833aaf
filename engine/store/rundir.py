"""The on-disk format of one run: `$ADVLC_HOME/runs/<run-id>/`. The only module that knows its file names.

    config.json     resolved RunConfig sections + "run" (id, preset, seed, group, created)
                    + "provenance" (code commit and dirty-diff hash, versions, device, host)
    status.json     state, pid + process start time, heartbeat, epoch/batch progress, error
    metrics.json    TinyDB written only by this run's process: tables `epochs`, `evals`, `swa`, `points`
    checkpoints/    last.pt, best.pt (+ swa_best.pt, swa_end.pt)
    log.txt         stdout/stderr of a detached run
    submitit/       a Slurm run's job files

Every JSON file is written atomically (engine.store.files). Directories are user-only (0700).
State changes go through engine.store.states.transition; everything else in status.json
through `update_status`.
"""

from __future__ import annotations

import time
from pathlib import Path

from tinydb import TinyDB

from engine.store.files import open_db, read_json, table, table_rows, write_json
from engine.store.states import transition

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.json"
LOG = "log.txt"
CHECKPOINTS = "checkpoints"
SUBMITIT = "submitit"


class RunDir:
    """Accessors for one run directory. Cheap to construct; reads lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    # -- paths -----------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def ckpt_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def submitit_dir(self) -> Path:
        return self.path / SUBMITIT

    def ckpt(self, name: str) -> Path:
        """checkpoints/<name>.pt (name: last, best, swa_best, swa_end)."""
        return self.ckpt_dir / f"{name}.pt"

    def checkpoints(self) -> list[str]:
        """The names of the checkpoints that exist, sorted."""
        return sorted(p.stem for p in self.ckpt_dir.glob("*.pt")) if self.ckpt_dir.exists() else []

    def exists(self) -> bool:
        return self.config_path.exists()

    # -- config ----------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.config_path, {}) or {}

    def write_config(self, config: dict) -> None:
        write_json(self.config_path, config)

    def create(self, config: dict) -> None:
        """Make the directory of a new run: config.json, then status `queued`."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=False)
        self.ckpt_dir.mkdir(mode=0o700)
        write_json(self.config_path, config)
        transition(self, "queued", created=time.time())

    # -- status ----------------------------------------------------------------------
    def status(self) -> dict:
        return read_json(self.status_path, {}) or {}

    def update_status(self, **fields) -> dict:
        """Merge progress fields (heartbeat, epoch, batch, pid, launch, ...) into status.json.

        The state itself changes only through engine.store.states.transition."""
        if "state" in fields:
            raise ValueError("update_status cannot change the state: use engine.store.states.transition")
        return self._merge_status(fields)

    def _merge_status(self, fields: dict, check=None) -> dict:
        """Read status.json, let `check(status)` veto, merge `fields`, write atomically."""
        st = self.status()
        if check is not None:
            check(st)
        st.update(fields)
        write_json(self.status_path, st)
        return st

    # -- metrics ---------------------------------------------------------------------
    def metrics_db(self) -> TinyDB:
        """metrics.json as a TinyDB (only the run's own process writes it)."""
        return open_db(self.metrics_path)

    def metrics_table(self, name: str):
        return table(self.metrics_db(), name)

    def metrics(self) -> dict:
        """Every table of metrics.json, parsed once: {"epochs": [...], "swa": [...], ...}."""
        data = read_json(self.metrics_path, {}) or {}
        return {name: table_rows(data, name) for name in data}

    def records(self, table_name: str = "epochs") -> list[dict]:
        return table_rows(read_json(self.metrics_path, {}), table_name)

    def epochs(self) -> list[dict]:
        return self.records("epochs")

    def evals(self) -> list[dict]:
        return self.records("evals")

    # -- log -------------------------------------------------------------------------
    def append_log(self, line: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write((line.rstrip("\n") + "\n").encode())

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        return text.splitlines()[-lines:]
