"""Python 3.10-3.13: the sources compile and every preset plans under each interpreter found.

The suite itself runs on the .venv interpreter (3.11). `make test` also runs vermin, which
checks statically that nothing needs more than 3.10. Vermin cannot see everything (syntax
newer than the interpreter running it, or behaviour that changed between versions), so here
the real interpreters do two cheap things, each in a second or less, with nothing written to
the tree:

- compile every .py file of engine/, tui/, tests/ and presets/ (no .pyc is written);
- plan every built-in preset: each sweep point and seed resolved and validated (engine.config:
  TOML through the tomli fallback on 3.10, dataclasses, `X | Y` annotations evaluated by
  typing.get_type_hints).

The interpreters are found as pythonX.Y on PATH or under pyenv (`$PYENV_ROOT`, ~/.pyenv);
a version that is not installed is skipped with a one-line reason. They have no project
dependencies installed (no network in the suite), so the preset check uses the config layer,
which needs only the standard library and, on 3.10, tomli: when that interpreter has no
tomli of its own, pip's vendored copy (the same package, vendored unchanged) stands in.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("3.10", "3.12", "3.13")


def interpreter(version: str) -> str | None:
    """A working pythonX.Y: pyenv's versions first, then PATH (a pyenv shim of an inactive version fails)."""
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv"), "/root/.pyenv"]
    found = [
        p
        for root in filter(None, roots)
        for p in sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python")), reverse=True)
    ]
    found += [shutil.which(f"python{version}") or ""]
    for exe in filter(None, found):
        try:
            p = subprocess.run(
                [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if p.returncode == 0 and p.stdout.strip() == version:
            return exe
    return None


def run(python: str, code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ADVLC_HOME": str(tmp_path / "home"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [python, "-I", "-c", code, str(ROOT)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )


COMPILE = """
import sys
from pathlib import Path
root = Path(sys.argv[1])
files = [p for d in ("engine", "tui", "tests", "presets") for p in sorted((root / d).rglob("*.py"))]
bad = []
for p in files:
    try:
        compile(p.read_bytes(), str(p), "exec", dont_inherit=True)
    except SyntaxError as e:
        bad.append(f"{p.relative_to(root)}:{e.lineno}: {e.msg}")
print(len(files))
assert not bad, bad
"""

PRESETS = """
import sys
sys.path.insert(0, sys.argv[1])
if sys.version_info < (3, 11):
    try:
        import tomli  # noqa: F401
    except ImportError:
        import pip._vendor.tomli as tomli
        sys.modules["tomli"] = tomli
from engine.config.presets import list_presets, load_preset, preset_runs
names = [e.name for e in list_presets(None)]
for name in names:
    assert preset_runs(name, home=None), name  # every sweep point and seed, resolved and validated
name, cfg, _ = load_preset("quick/digits-fgsm_n-advlc", ["attack.eps=8/255", "train.epochs=3"], None)
assert cfg.train.epochs == 3 and abs(cfg.attack.eps - 8 / 255) < 1e-12
heavy = [m for m in ("torch", "numpy") if m in sys.modules]
assert not heavy, heavy
print(len(names))
"""


@pytest.fixture(params=VERSIONS)
def python(request):
    exe = interpreter(request.param)
    if exe is None:
        pytest.skip(f"Python {request.param} is not installed (pythonX.Y on PATH or pyenv)")
    return exe


def test_sources_compile(python, tmp_path):
    p = run(python, COMPILE, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert int(p.stdout.split()[-1]) > 100


def test_every_preset_plans(python, tmp_path):
    p = run(python, PRESETS, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert int(p.stdout.split()[-1]) >= 80
