"""The run process: one run directory trained (or analysed) end to end, whatever happens to it.

    python -m engine.run RUN_DIR

`run(rd)` owns the run's lifecycle: the state `running` with this process's pid, a heartbeat
thread, and always a final state (`finished`, `failed` with the error's last lines, `stopped`
on SIGTERM or Ctrl-C with last.pt kept). The work itself is engine.run.trainer.train_run, or
engine.run.experiments.run_experiment for an experiment run. The process writes only its own
run directory; the index is updated through the store.
"""

from __future__ import annotations

import gc
import os
import signal
import stat
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from engine.cores import create_time
from engine.errors import UserError, os_error_line
from engine.config.schema import from_json
from engine.run.device import apply_threads
from engine.run.experiments import is_experiment, run_experiment
from engine.run.trainer import train_run
from engine.store.index import Store
from engine.store.rundir import RunDir
from engine.store.states import transition

HEARTBEAT_S = 5.0
"""Seconds between heartbeats; $ADVLC_HEARTBEAT_S overrides."""


class StopRequested(Exception):
    """Raised in the training loop when the run is asked to stop (SIGTERM)."""


def heartbeat_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("ADVLC_HEARTBEAT_S", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


class _RunProcessDir(RunDir):
    """The run directory as its own process sees it: status.json writes from the training
    loop and from the heartbeat thread are serialised (each is read-check-merge-replace)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._status_lock = threading.Lock()

    def _merge_status(self, fields: dict, check=None) -> dict:
        with self._status_lock:
            return super()._merge_status(fields, check)


class _Heartbeat:
    """A daemon thread writing status.json `heartbeat` every `interval` seconds, so a run on
    another host (a Slurm node) is seen alive through setup, evaluation and checkpoints too.
    `training` is set while the work runs: only then does SIGTERM interrupt it (main())."""

    training = threading.Event()

    def __init__(self, rd: RunDir, interval: float):
        self.rd, self.interval = rd, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="advlc-heartbeat", daemon=True)

    def start(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.rd.update_status(heartbeat=time.time())
            except Exception:  # noqa: BLE001 - a full disk must not kill training from here
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


def run(
    rd: RunDir,
    store: Store | None = None,
    *,
    on_event: Callable[[str, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Train (or resume, or analyse) the run in `rd`; returns the final state.

    `on_event(kind, info)` receives "start", "batch", "epoch" and "end" events (for a
    progress display); `log` receives the human-readable lines that go to log.txt.
    An exit that is not an error (SystemExit, e.g. submitit requeueing the job) is recorded
    as `stopped` and re-raised.
    """
    store = store or Store.containing(rd)
    rd = rd if isinstance(rd, _RunProcessDir) else _RunProcessDir(rd.path)
    emit = on_event or (lambda kind, info: None)
    pid = os.getpid()
    interval = heartbeat_interval()
    try:  # what `advlc repair` rebuilds config.json from, for a run made before create wrote it
        rd.keep_config_copy()
    except OSError as exc:
        log(f"{rd.config_copy_path.name} not written: {os_error_line(exc)}")
    transition(
        rd,
        "running",
        pid=pid,
        pid_create_time=create_time(pid),
        host=os.uname().nodename,
        started=time.time(),
        heartbeat=time.time(),
        heartbeat_s=interval,
        error=None,
        ended=None,
    )
    store.sync(rd)
    beat = _Heartbeat(rd, interval).start()
    work = run_experiment if is_experiment(rd) else train_run
    try:
        try:
            _Heartbeat.training.set()
            threads = apply_threads(from_json(rd.config_json()).train.threads)
            if threads:
                log(threads)
            work(rd, store, emit, log)
            state, error = "finished", None
        except (KeyboardInterrupt, StopRequested):
            state, error = "stopped", None
        except UserError as exc:
            state, error = "failed", str(exc)
        except OSError as exc:  # a full or read-only disk, a permission: said in one line
            state, error = "failed", os_error_line(exc)
            log(error)
        except Exception:
            state, error = "failed", "".join(traceback.format_exc().splitlines(True)[-12:])
            log(error)
        finally:
            _Heartbeat.training.clear()
    except BaseException as exc:  # SystemExit and the like: not an error of the run
        beat.stop()
        transition(rd, "stopped", error=f"interrupted ({type(exc).__name__})", heartbeat=time.time(), pid=None)
        _sync_index(store, rd, log)
        raise
    beat.stop()
    transition(rd, state, error=error, heartbeat=time.time(), pid=None)  # in place if the disk is full
    _sync_index(store, rd, log)
    emit("end", {"state": state, "error": error})
    return state


def _sync_index(store: Store, rd: RunDir, log) -> None:
    """The index after the final state; on a full disk it is left for the next command to bring up
    to date (it is derived from status.json, which is written)."""
    try:
        store.sync(rd)
    except OSError as exc:
        log(f"index not updated: {os_error_line(exc)}")


def own_log_output(rd: RunDir) -> bool:
    """Never write the log through a link: when this process's output (fd 1) is the file that a
    log.txt symbolic link leads to (a launcher opened log.txt and followed the link), stdout and
    stderr are sent to a regular log.txt of the run's own instead (`RunDir.open_log` replaces the
    link, whose target is left as it was). Returns True when it did."""
    try:
        out = os.fstat(1)
        if not stat.S_ISREG(out.st_mode) or not rd.log_path.is_symlink():
            return False
        target = os.stat(rd.log_path)
    except OSError:
        return False
    if (out.st_dev, out.st_ino) != (target.st_dev, target.st_ino):
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    fd = rd.open_log()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of a detached run process: `python -m engine.run RUN_DIR`.

    SIGTERM stops the run cleanly (state `stopped`, last.pt kept) while it trains; one that
    arrives as the run is already ending is ignored, so the final state is always written.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.run RUN_DIR", file=sys.stderr)
        return 2
    rd = RunDir(Path(argv[0]).resolve())
    if not rd.config_path.exists():
        print(f"engine.run: {rd.path}: not a run directory (no config.json)", file=sys.stderr)
        return 2
    own_log_output(rd)

    def on_sigterm(signum, frame):
        if _Heartbeat.training.is_set():
            _Heartbeat.training.clear()  # once: the stop itself must not be interrupted
            raise StopRequested()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        state = run(rd, Store.containing(rd), log=lambda line: print(line, flush=True))
    finally:
        gc.freeze()  # the interpreter's final collection of torch's objects takes ~1.5 s otherwise
    return 0 if state in ("finished", "stopped") else 1
