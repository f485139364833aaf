"""`advlc pack RUN… -o FILE.tar.gz` and `advlc unpack FILE`: runs handed to a colleague.

The archive (a gzipped tar, format 1):

    advlc-pack.json            the manifest: format, creation time, the runs, and every other
                               member's size and sha256
    runs/<id>/config.json, status.json, metrics.json, meta.json, log.txt, checkpoints/<chosen>.pt

Nothing names the sender's store: the teacher checkpoints and analysed source of config.json
are written relative to the store, and the store's folder becomes `$ADVLC_HOME` in log.txt and
status.json. Only runs that have ended are packed (their files no longer change).

`unpack` checks everything before it writes anything: the manifest parses and lists exactly
the members present, each a plain file with the size and sha256 it says, named only as above,
under run ids that are not in the store yet. Each run is then extracted into a temporary folder
in runs/ and renamed into place, so an interrupted unpack leaves no half run. Checkpoints are
loaded later with `weights_only=True`, like every checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
import zlib
from pathlib import Path

from engine.errors import CorruptFile, UserError
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
from engine.store.records import ConfigRecord, Meta, RuntimeRecord, Shape, Status, table_records
from engine.store.states import FINAL_STATES

MANIFEST = "advlc-pack.json"
FORMAT = 1
CKPT_FILES = {"best": "best", "end": "last", "swa_best": "swa_best", "swa_end": "swa_end"}
_MEMBER = re.compile(rf"^runs/({RUN_ID.pattern[1:-1]})/(config|status|metrics|meta|runtime)\.json$|"
                     rf"^runs/({RUN_ID.pattern[1:-1]})/log\.txt$|"
                     rf"^runs/({RUN_ID.pattern[1:-1]})/checkpoints/(best|last|swa_best|swa_end)\.pt$")


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
    rd.meta()                           # a damaged meta.json is not handed on either
    for name in (STATUS, METRICS, META, LOG):
        p = rd.path / name
        if p.exists():
            data = p.read_bytes()
            if name in (STATUS, LOG):
                data = data.replace(home.encode(), b"$ADVLC_HOME").replace(str(store.home).encode(), b"$ADVLC_HOME")
            if name == METRICS:
                rd.metrics()          # a damaged metrics.json is not handed on
            out[f"runs/{rd.id}/{name}"] = data
    for c in ckpts:
        p = rd.ckpt(CKPT_FILES[c])
        if p.exists():
            out[f"runs/{rd.id}/{CHECKPOINTS}/{p.name}"] = p.read_bytes()
    return out


def pack(store: Store, rds: list[RunDir], out: Path, ckpts: list[str] = ("best", "end")) -> dict:
    """Write the archive `out` of runs `rds` with checkpoints `ckpts` (best, end, swa_best,
    swa_end); returns the manifest."""
    bad = [c for c in ckpts if c not in CKPT_FILES]
    if bad:
        raise UserError(f"--ckpt {bad[0]}: must be one of {', '.join(CKPT_FILES)} (or none)")
    members: dict[str, bytes] = {}
    for rd in rds:
        members.update(_members(store, rd, list(ckpts)))
    manifest = {"format": FORMAT, "created": time.time(), "runs": [rd.id for rd in rds],
                "files": {name: {"size": len(data), "sha256": _sha(data)} for name, data in members.items()}}
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode())] + sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return manifest


def _read_archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {member name: bytes}) of an archive, every check of the module doc done."""
    def bad(what: str):
        raise UserError(f"{path}: {what}; refusing to unpack it", code=1)

    try:
        with tarfile.open(path, "r:gz") as tar:
            data: dict[str, bytes] = {}
            for m in tar.getmembers():
                if not m.isfile():
                    bad(f"member {m.name!r} is not a plain file")
                if m.name in data:
                    bad(f"member {m.name!r} appears twice")
                if m.name != MANIFEST and not _MEMBER.match(m.name):
                    bad(f"unexpected member {m.name!r}")
                data[m.name] = tar.extractfile(m).read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        bad(f"not a complete advlc archive ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})")
    if MANIFEST not in data:
        bad(f"no {MANIFEST} (not an advlc archive)")
    try:
        manifest = json.loads(data.pop(MANIFEST))
        files = manifest["files"]
        runs = manifest["runs"]
    except (ValueError, KeyError, TypeError):
        bad(f"{MANIFEST} does not parse")
    if manifest.get("format") != FORMAT:
        bad(f"archive format {manifest.get('format')!r} (this advlc reads format {FORMAT})")
    if set(files) != set(data):
        missing = sorted(set(files) - set(data)) or sorted(set(data) - set(files))
        bad(f"{missing[0]} is in the archive or its manifest but not both (truncated or tampered)")
    for name, blob in data.items():
        if len(blob) != files[name].get("size") or _sha(blob) != files[name].get("sha256"):
            bad(f"{name} does not match the manifest's checksum (damaged or tampered)")
    if not isinstance(runs, list) or any(not isinstance(r, str) or not RUN_ID.match(r) for r in runs):
        bad("the manifest's run ids are not run ids")
    for r in runs:
        if f"runs/{r}/{CONFIG}" not in data:
            bad(f"run {r} has no config.json")
    for name, blob in data.items():
        _check_member(path, name, blob, bad)
    return manifest, data


_RECORDS = {CONFIG: ConfigRecord, STATUS: Status, META: Meta, RUNTIME: RuntimeRecord}


def _check_member(path: Path, name: str, blob: bytes, bad) -> None:
    """An archive's JSON files must parse and have the shape of their records before anything is written."""
    base = name.rsplit("/", 1)[-1]
    if base not in _RECORDS and base != METRICS:
        return
    try:
        doc = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        bad(f"{name} is not valid JSON")
    try:
        if base == METRICS:
            if not isinstance(doc, dict):
                raise Shape("metrics", doc, "must be an object of tables")
            for table in doc:
                table_records(doc, table, name)
        else:
            _RECORDS[base].from_json(doc)
    except Shape as exc:
        bad(f"{name} has a wrong value: {exc}")
    except CorruptFile as exc:
        bad(str(exc).split("; ")[0])


def unpack(store: Store, path: Path) -> list[RunDir]:
    """Add the runs of archive `path` to `store`, ids kept; refuses (one line) a damaged or
    tampered archive and an id the store already has, before writing anything."""
    manifest, data = _read_archive(Path(path))
    store.check_writable()
    taken = [r for r in manifest["runs"] if (store.runs_dir / r).exists()]
    if taken:
        raise UserError(f"{path}: run {taken[0]} is already in {store.runs_dir} (delete it there, or unpack "
                        f"into another store with --home)")
    out = []
    for rid in manifest["runs"]:
        tmp = store.runs_dir / f".unpacking-{rid}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / CHECKPOINTS).mkdir(mode=0o700, parents=True)
        prefix = f"runs/{rid}/"
        for name, blob in data.items():
            if name.startswith(prefix):
                dest = tmp / name[len(prefix):]
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
        os.replace(tmp, store.runs_dir / rid)
        rd = store.run_dir(rid)
        store.sync(rd)
        out.append(rd)
    return out
