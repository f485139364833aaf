"""`advlc pack RUN… -o FILE.tar.gz` and `advlc unpack FILE`: runs handed to a colleague.

The archive (a gzipped tar, format 1):

    advlc-pack.json            the manifest: format, creation time, the runs, and every other
                               member's size and sha256
    runs/<id>/config.json, status.json, metrics.json, meta.json, log.txt, checkpoints/<chosen>.pt

Nothing names the sender's store: the teacher checkpoints and analysed source of config.json
are written relative to the store, and the store's folder becomes `$ADVLC_HOME` in log.txt and
status.json. Only runs that have ended are packed (their files no longer change).

**Unpack imports data, never intent.** An archive is someone else's files: nothing in it is obeyed
as if this store had written it.

- A run arrives in a neutral state: `finished`, `stopped` or `failed` as recorded; a `running`,
  `queued` or `lost` run arrives `stopped` (resumable), its error saying it was imported. Its
  status.json is written afresh from the recorded state and progress only: no launch record (so
  no Slurm `setup` lines and no GPU queue), no pid, process start time, host, GPU, launcher or
  heartbeat of the sender. `advlc resume` of an imported run therefore uses the executor the
  user's own command asks for (local, unless options say otherwise), and `stop`/`delete` have no
  process to signal. runtime.json's `device` (a GPU queue's retargeting on the sender's machine)
  is dropped too.
- Every JSON member must parse and have the shape of its record, and each run's config is
  validated like a preset (`check_config`, given by engine.launch: engine.config.schema) before
  anything lands in runs/: one line naming the member and the key otherwise.
- Members are streamed, never read whole (JSON members aside, which are small): each member's
  tar header size is checked against the limits before a byte of it is read, so a compressed
  bomb stops at the header. The limits, in bytes, overridable by environment variables:

      ADVLC_UNPACK_MAX_MEMBER   2 GiB  (2147483648)   one member (a checkpoint, log.txt)
      ADVLC_UNPACK_MAX_TOTAL   20 GiB (21474836480)   all members together
      JSON members            16 MiB (16777216)       or the member limit when that is lower
      tar extension headers   64 KiB                  (pax, GNU long names); at most 100000 members

  Sparse members, links, folders and anything else but a plain file are refused.
- Everything is first streamed into a staging folder `runs/.unpacking-<token>/` (0700, files
  0600, the archive's own modes ignored) held by an OS lock on `runs/.unpacking-<token>.lock`;
  each checked run is then renamed into place, so an interrupted unpack leaves no half run. A
  staging folder whose lock nobody holds (a killed unpack) is removed by the next `advlc`
  command (`sweep_unpacking`, from `reconcile` and from `unpack`).

The manifest must parse and list exactly the members present, each with the size and sha256 it
says, named only as above, under run ids that are not in the store yet. Checkpoints are loaded
later with `weights_only=True`, like every checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, NoReturn

from engine.errors import CorruptFile, UserError, os_error_line
from engine.store.index import Store
from engine.store.rundir import (
    CHECKPOINTS,
    CONFIG,
    LOG,
    META,
    METRICS,
    RUN_ID,
    RUNTIME,
    STATUS,
    RunDir,
)
from engine.store.files import write_json
from engine.store.records import ConfigRecord, Meta, Record, RuntimeRecord, Shape, Status, effective, table_records
from engine.store.states import FINAL_STATES

Bad = Callable[[str], NoReturn]
"""Says what is wrong with an archive, one line, and never returns (unpack's `bad`)."""

MANIFEST = "advlc-pack.json"
FORMAT = 1
CKPT_FILES = {"best": "best", "end": "last", "swa_best": "swa_best", "swa_end": "swa_end"}
MAX_MEMBER_ENV = "ADVLC_UNPACK_MAX_MEMBER"
MAX_TOTAL_ENV = "ADVLC_UNPACK_MAX_TOTAL"
MAX_MEMBER = 2 * 1024**3
"""Bytes one member may have (ADVLC_UNPACK_MAX_MEMBER overrides it)."""
MAX_TOTAL = 20 * 1024**3
"""Bytes all members together may have (ADVLC_UNPACK_MAX_TOTAL overrides it)."""
MAX_JSON = 16 * 1024**2
"""Bytes a JSON member may have (it is read into memory to be checked)."""
MAX_EXTENSION = 64 * 1024
"""Bytes a tar extension header (pax, GNU long name) may have: tarfile reads it whole."""
MAX_MEMBERS = 100_000
STAGING = ".unpacking-"
"""The staging folders of unpack in runs/ (`.unpacking-<token>`, with `.unpacking-<token>.lock`)."""
_CHUNK = 1024 * 1024
_MEMBER = re.compile(
    rf"^runs/({RUN_ID.pattern[1:-1]})/(config|status|metrics|meta|runtime)\.json$|"
    rf"^runs/({RUN_ID.pattern[1:-1]})/log\.txt$|"
    rf"^runs/({RUN_ID.pattern[1:-1]})/checkpoints/(best|last|swa_best|swa_end)\.pt$"
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _relative(path: str | None, home: str) -> str | None:
    return os.path.relpath(path, home) if path and path.startswith(home) else path


def _relative_config(rd: RunDir, store: Store) -> dict:
    """config.json (as written at creation) with the store's absolute paths made relative to the store."""
    home = str(store.home.resolve())
    config = rd.written_config()
    for t in config.run.teachers.values():
        t.checkpoint = _relative(t.checkpoint, home)
    if config.source is not None:
        config.source.path = _relative(config.source.path, home)
    return config.to_json()


def _relative_runtime(rd: RunDir, store: Store) -> dict:
    rt = rd.runtime()
    if rt.source is not None:
        rt.source.path = _relative(rt.source.path, str(store.home.resolve()))
    return rt.to_json()


def _members(store: Store, rd: RunDir, ckpts: list[str]) -> dict[str, bytes]:
    st = rd.status()
    if st.state not in FINAL_STATES:
        raise UserError(f"run {rd.id} is {st.state}: pack runs that have ended (stop it first)")
    home = str(store.home.resolve())
    out = {f"runs/{rd.id}/{CONFIG}": json.dumps(_relative_config(rd, store), indent=1).encode()}
    if rd.runtime_path.exists():
        out[f"runs/{rd.id}/{RUNTIME}"] = json.dumps(_relative_runtime(rd, store), indent=1).encode()
    rd.meta()  # a damaged meta.json is not handed on either
    for name in (STATUS, METRICS, META, LOG):
        p = rd.path / name
        if p.exists():
            data = p.read_bytes()
            if name in (STATUS, LOG):
                data = data.replace(home.encode(), b"$ADVLC_HOME").replace(str(store.home).encode(), b"$ADVLC_HOME")
            if name == METRICS:
                rd.metrics()  # a damaged metrics.json is not handed on
            out[f"runs/{rd.id}/{name}"] = data
    for c in ckpts:
        p = rd.ckpt(CKPT_FILES[c])
        if p.exists():
            out[f"runs/{rd.id}/{CHECKPOINTS}/{p.name}"] = p.read_bytes()
    return out


def pack(store: Store, rds: list[RunDir], out: Path, ckpts: Sequence[str] = ("best", "end")) -> dict:
    """Write the archive `out` of runs `rds` with checkpoints `ckpts` (best, end, swa_best,
    swa_end); returns the manifest."""
    bad = [c for c in ckpts if c not in CKPT_FILES]
    if bad:
        raise UserError(f"--ckpt {bad[0]}: must be one of {', '.join(CKPT_FILES)} (or none)")
    members: dict[str, bytes] = {}
    for rd in rds:
        members.update(_members(store, rd, list(ckpts)))
    manifest = {
        "format": FORMAT,
        "created": time.time(),
        "runs": [rd.id for rd in rds],
        "files": {name: {"size": len(data), "sha256": _sha(data)} for name, data in members.items()},
    }
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode())] + sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return manifest


# ------------------------------------------------------------------------------ unpack: limits
def limits() -> tuple[int, int, int]:
    """(bytes per member, bytes in all, bytes per JSON member): the module's limits with
    ADVLC_UNPACK_MAX_MEMBER / ADVLC_UNPACK_MAX_TOTAL over them; a one-line UserError for a bad value."""
    out = []
    for env, default in ((MAX_MEMBER_ENV, MAX_MEMBER), (MAX_TOTAL_ENV, MAX_TOTAL)):
        text = os.environ.get(env, "").strip()
        if not text:
            out.append(default)
            continue
        if not re.fullmatch(r"\d{1,20}", text) or int(text) <= 0:
            raise UserError(f"{env} = {text[:40]!r}: must be a whole number of bytes > 0 (default {default})")
        out.append(int(text))
    return out[0], out[1], min(MAX_JSON, out[0])


class _TooLarge(Exception):
    """A tar extension header over MAX_EXTENSION, or a sparse member: refused before tarfile reads it."""


class _Header(tarfile.TarInfo):
    """tarfile's member header, refusing what tarfile would read whole into memory (a pax or GNU
    long-name header is read in one piece) before it does."""

    def _proc_member(self, tarfile_):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _TooLarge(f"member {self.name!r} is a sparse file, not a plain file")
        if (
            self.type
            in (
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE,
            )
            and self.size > MAX_EXTENSION
        ):
            raise _TooLarge(f"a tar extension header of {self.size} bytes (at most {MAX_EXTENSION})")
        return super()._proc_member(tarfile_)


def _place(name: str) -> str | None:
    """Where member `name` goes in the staging folder (`<id>/config.json`, `<id>/checkpoints/best.pt`,
    the manifest as itself); None for a name an archive may not have."""
    if name == MANIFEST:
        return name
    return name[len("runs/") :] if _MEMBER.match(name) else None


# ------------------------------------------------------------------------------ unpack: streaming
def _copy(src, stage: Path, place: str, size: int) -> str:
    """Stream `size` bytes of `src` into a new file `stage/place` (0600, its folders 0700); its sha256."""
    h, n = hashlib.sha256(), 0
    dest = stage / place
    try:
        folder = stage
        for part in Path(place).parent.parts:  # each folder user-only (mkdir's parents=True is not)
            folder = folder / part
            if not folder.is_dir():
                folder.mkdir(mode=0o700)
        f = os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb")
    except OSError as exc:
        raise UserError(f"cannot write to the run store: {os_error_line(exc, dest)}", code=1) from None
    with f:
        while n < size:
            chunk = src.read(min(_CHUNK, size - n))  # reading the archive: its errors are the archive's
            if not chunk:
                raise EOFError("unexpected end of data")
            h.update(chunk)
            try:
                f.write(chunk)
                if n + len(chunk) == size:
                    f.flush()
            except OSError as exc:
                raise UserError(f"cannot write to the run store: {os_error_line(exc, dest)}", code=1) from None
            n += len(chunk)
    return h.hexdigest()


def _stream(path: Path, stage: Path, bad: Bad) -> dict[str, tuple[int, str]]:
    """Stream the members of archive `path` into `stage`, each checked against the names and the
    limits from its header before any of it is read; {member name: (size, sha256)}."""
    per_member, total_limit, per_json = limits()
    staged: dict[str, tuple[int, str]] = {}
    total = 0
    try:
        with tarfile.open(path, "r|gz", tarinfo=_Header) as tar:
            for m in tar:
                if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    bad(f"member {m.name!r} is not a plain file")
                if m.name in staged:
                    bad(f"member {m.name!r} appears twice")
                place = _place(m.name)
                if place is None:
                    bad(f"unexpected member {m.name!r}")
                if len(staged) >= MAX_MEMBERS:
                    bad(f"more than {MAX_MEMBERS} members")
                is_json = m.name.endswith(".json")
                limit = per_json if is_json else per_member
                if m.size > limit:
                    what = "a JSON member" if is_json else f"one member ({MAX_MEMBER_ENV})"
                    bad(f"member {m.name} is {m.size} bytes, over the limit of {limit} bytes for {what}")
                if total + m.size > total_limit:
                    bad(
                        f"member {m.name} takes the archive over the limit of {total_limit} bytes in all "
                        f"({MAX_TOTAL_ENV})"
                    )
                total += m.size
                staged[m.name] = (m.size, _copy(tar.extractfile(m), stage, place, m.size))
    except _TooLarge as exc:
        bad(str(exc))
    except RecursionError:
        bad("too many chained tar extension headers")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        bad(f"not a complete advlc archive ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})")
    return staged


def _read_json(stage: Path, place: str, name: str, bad):
    """A staged JSON member, parsed (it is at most the JSON limit)."""
    try:
        return json.loads((stage / place).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        bad(f"{name} is not valid JSON")


def _check_manifest(stage: Path, staged: dict[str, tuple[int, str]], bad: Bad) -> list[str]:
    """The run ids of the manifest, once it lists exactly the members present with their sizes and
    checksums, and every member belongs to one of its runs."""
    if MANIFEST not in staged:
        bad(f"no {MANIFEST} (not an advlc archive)")
    manifest = _read_json(stage, MANIFEST, MANIFEST, bad)
    try:
        files, runs = manifest["files"], manifest["runs"]
        ok = isinstance(files, dict) and all(isinstance(v, dict) for v in files.values())
    except (KeyError, TypeError):
        ok = False
    if not ok:
        bad(f"{MANIFEST} does not parse")
    if manifest.get("format") != FORMAT:
        bad(f"archive format {manifest.get('format')!r} (this advlc reads format {FORMAT})")
    members = {n: v for n, v in staged.items() if n != MANIFEST}
    if set(files) != set(members):
        missing = sorted(set(files) - set(members)) or sorted(set(members) - set(files))
        bad(f"{missing[0]} is in the archive or its manifest but not both (truncated or tampered)")
    for name, (size, sha) in members.items():
        if size != files[name].get("size") or sha != files[name].get("sha256"):
            bad(f"{name} does not match the manifest's checksum (damaged or tampered)")
    if not isinstance(runs, list) or any(not isinstance(r, str) or not RUN_ID.match(r) for r in runs):
        bad("the manifest's run ids are not run ids")
    if len(set(runs)) != len(runs):
        bad("the manifest lists a run twice")
    for name in members:
        if name.split("/")[1] not in runs:
            bad(f"member {name} belongs to no run of the manifest")
    for r in runs:
        if f"runs/{r}/{CONFIG}" not in members:
            bad(f"run {r} has no config.json")
    return runs


_RECORDS: dict[str, type[Record] | type[ConfigRecord]] = {
    CONFIG: ConfigRecord,
    STATUS: Status,
    META: Meta,
    RUNTIME: RuntimeRecord,
}


def _check_member(name: str, doc, bad: Bad):
    """An archive's JSON file must have the shape of its record; returns the record (metrics: None)."""
    base = name.rsplit("/", 1)[-1]
    try:
        if base == METRICS:
            if not isinstance(doc, dict):
                raise Shape("metrics", doc, "must be an object of tables")
            for table in doc:
                table_records(doc, table, name)
            return None
        return _RECORDS[base].from_json(doc)
    except Shape as exc:
        bad(f"{name} has a wrong value: {exc}")
    except CorruptFile as exc:
        bad(str(exc).split("; ")[0])


# ------------------------------------------------------------------------------ unpack: data, not intent
_KEPT = ("created", "started", "ended", "epoch", "batch", "batches", "point", "points", "error", "early_stop")
"""What an imported status.json keeps of the sender's: its progress and its story, nothing that
names a process, a host, a launcher or how to start it again."""
IMPORTED_STATES = ("finished", "stopped", "failed")
"""The states an imported run keeps; any other arrives `stopped`."""


def neutral_status(st: Status, rid: str, archive: str) -> Status:
    """The status an imported run starts with here: the recorded state when it is final and not
    `lost`, else `stopped` with an error saying so; progress kept; no launch record, pid, process
    start time, host, GPU, launcher, heartbeat or unknown keys of the sender's."""
    kept = {k: getattr(st, k) for k in _KEPT}
    kept = {k: v.to_json() if hasattr(v, "to_json") else v for k, v in kept.items()}  # nested records as read
    state = st.state if st.state in IMPORTED_STATES else "stopped"
    if state != st.state:
        kept["error"] = (
            f"imported by `advlc unpack` from {archive}, where it was {st.state}; "
            f"`advlc resume {rid}` continues it here"
        )
    kept["ended"] = kept["ended"] or time.time()
    return Status.from_json({"state": state, **kept})


def _prepare_run(stage: Path, rid: str, archive: Path, check_config, bad: Bad) -> None:
    """Check run `rid`'s staged files (records, its config like a preset) and make them data: a
    fresh neutral status.json, runtime.json without the sender's device."""
    rdir = stage / rid
    docs = {}
    for base in (CONFIG, STATUS, META, RUNTIME, METRICS):
        if (rdir / base).exists():
            name = f"runs/{rid}/{base}"
            docs[base] = _check_member(name, _read_json(stage, f"{rid}/{base}", name, bad), bad)
    config: ConfigRecord = docs[CONFIG]
    if config.run.id not in (None, rid):
        bad(f"runs/{rid}/{CONFIG} has a wrong value: run.id = {config.run.id!r}: must be {rid!r}, its folder")
    runtime: RuntimeRecord | None = docs.get(RUNTIME)
    if runtime is not None and runtime.device is not None:
        runtime.device = None
        write_json(rdir / RUNTIME, runtime.to_json())
    if check_config is not None:
        try:
            check_config(effective(config, runtime).to_json(), f"{archive}: runs/{rid}/{CONFIG}")
        except UserError as exc:
            raise UserError(f"{exc}; refusing to unpack it", code=1) from None
    status = neutral_status(docs.get(STATUS) or Status(state="stopped"), rid, archive.name)
    write_json(rdir / STATUS, status.to_json())


# ------------------------------------------------------------------------------ unpack: staging
def _locked(lock: Path, *, create: bool) -> int | None:
    """An open descriptor of `lock` holding its OS lock, or None when another process holds it
    (or, without `create`, when it does not exist)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | ((os.O_CREAT | os.O_EXCL) if create else 0)
    try:
        fd = os.open(lock, flags, 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if create else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _stage(store: Store) -> tuple[Path, Path, int]:
    """A new staging folder in runs/ with its lock held: (folder, lock file, descriptor)."""
    while True:
        token = secrets.token_hex(6)
        lock = store.runs_dir / f"{STAGING}{token}.lock"
        fd = _locked(lock, create=True)
        assert fd is not None  # with create, _locked waits for the lock: it always returns one
        try:
            if os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino:  # not swept meanwhile
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    folder = lock.with_name(f"{STAGING}{token}")
    folder.mkdir(mode=0o700)
    return folder, lock, fd


def sweep_unpacking(store: Store) -> list[Path]:
    """Remove the staging folders (and lock files) of unpacks that were killed: those whose lock
    no process holds. Returns what was removed; never fails a command."""
    gone: list[Path] = []
    try:
        leftovers = sorted(store.runs_dir.glob(f"{STAGING}*")) if store.runs_dir.is_dir() else []
    except OSError:
        return gone
    for p in leftovers:
        try:
            if p.name.endswith(".lock"):
                if p.with_name(p.name[: -len(".lock")]).exists():
                    continue  # handled with its folder
                folder, lock = None, p
            elif p.is_dir() and not p.is_symlink():
                folder, lock = p, p.with_name(p.name + ".lock")
            else:
                continue
            fd = _locked(lock, create=False)
            if fd is None and lock.exists():
                continue  # an unpack is at work
            try:
                if folder is not None:
                    shutil.rmtree(folder)
                    gone.append(folder)
                lock.unlink(missing_ok=True)
            finally:
                if fd is not None:
                    os.close(fd)
        except OSError:
            continue
    return gone


# ------------------------------------------------------------------------------ unpack
def unpack(store: Store, path: Path, *, check_config: Callable[[dict, str], None] | None = None) -> list[RunDir]:
    """Add the runs of archive `path` to `store`, ids kept, as data (the module doc): refuses in one
    line a damaged, tampered or oversized archive, a run whose config `check_config(config JSON,
    where)` refuses (a UserError), and an id the store already has, before any run lands in runs/."""
    path = Path(path)

    def bad(what: str) -> NoReturn:
        raise UserError(f"{path}: {what}; refusing to unpack it", code=1)

    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    limits()
    store.check_writable()
    sweep_unpacking(store)
    stage, lock, fd = _stage(store)
    try:
        runs = _check_manifest(stage, _stream(path, stage, bad), bad)
        taken = [r for r in runs if (store.runs_dir / r).exists()]
        if taken:
            raise UserError(
                f"{path}: run {taken[0]} is already in {store.runs_dir} (delete it there, or unpack "
                f"into another store with --home)"
            )
        for rid in runs:
            (stage / rid / CHECKPOINTS).mkdir(mode=0o700, exist_ok=True)
            _prepare_run(stage, rid, path, check_config, bad)
        out = []
        for rid in runs:
            try:
                os.rename(stage / rid, store.runs_dir / rid)
            except OSError:
                raise UserError(
                    f"{path}: run {rid} appeared in {store.runs_dir} meanwhile; it was not unpacked"
                ) from None
            rd = store.run_dir(rid)
            store.sync(rd)
            out.append(rd)
        return out
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        lock.unlink(missing_ok=True)
        os.close(fd)
