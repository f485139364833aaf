"""What an installed user gets: the wheel in a fresh venv, and the fixes for code outside a checkout.

The slow test builds the wheel from a copy of the sources (so the checkout gets no build/ or
*.egg-info), installs it with `pip install --no-deps` into a new venv, and runs `advlc` from
there: every preset listed, `preset show`, a foreground and a detached digits run, provenance
without a commit, and `bench --write-docs` refusing to write into site-packages.

Why this venv: installing the dependencies (torch alone is GBs) would take minutes and a
network. `python -m venv --system-site-packages` does not help: from the project's .venv it
links the *base* interpreter's site-packages, which has no torch. So the new venv is plain,
and one `.pth` line appends the project's .venv site-packages to its sys.path. The wheel sits
in the venv's own site-packages, which comes first, so `engine`, `tui` and `presets` are
imported from the wheel (asserted), while torch, textual, … come from the .venv; the .venv's
editable install of advlc stays inactive, because the .pth files of a folder named in a .pth
line are not processed. The venv lives inside a fresh git repository, as a user's `.venv/`
inside their own project would: provenance must not record that repository's commit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- fast: the fixes
def _git_repo(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "user's own project"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, env=env, timeout=60)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_provenance_records_no_commit_of_an_enclosing_repository(tmp_path, monkeypatch):
    from engine.run import provenance

    _git_repo(tmp_path / "project")
    site = tmp_path / "project" / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    monkeypatch.setattr(provenance, "CODE_ROOT", site)
    v = provenance.code_version()
    assert v["commit"] is None and v["dirty"] is None and "version" in v
    # the checkout itself (when it is one) still records its commit
    monkeypatch.setattr(provenance, "CODE_ROOT", ROOT)
    top = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == ROOT.resolve():
        assert provenance.code_version()["commit"]


# ---------------------------------------------------------------------------- slow: the wheel
def _copy_sources(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("engine", "tui", "presets"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)


def _sh(*cmd, env=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert p.returncode == 0, f"{cmd}: {p.stdout[-3000:]}{p.stderr[-3000:]}"
    return p


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_wheel_in_a_fresh_venv(tmp_path):
    t0 = time.monotonic()
    src, dist, project = tmp_path / "src", tmp_path / "dist", tmp_path / "project"
    _copy_sources(src)
    _sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dist, src)
    (wheel,) = dist.glob("advlc-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("tests/") or "synthetic" in n or "bench_app" in n], (
        "test scaffolding in the wheel"
    )

    _git_repo(project)
    venv = project / ".venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    site = Path(_sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_advlc_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh(sys.executable, "-m", "pip", "--python", py, "install", "--quiet", "--no-deps", "--no-index", wheel)

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(ADVLC_HOME=str(home), COLUMNS="200", OMP_NUM_THREADS="1")
    advlc = venv / "bin" / "advlc"

    def run(*args, check=True, timeout=600):
        p = subprocess.run([str(advlc), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)
        if check:
            assert p.returncode == 0, f"advlc {' '.join(args)}: {p.stdout[-3000:]}{p.stderr[-3000:]}"
        return p

    where = _sh(
        py,
        "-c",
        "import engine, tui, presets; print(engine.__file__, tui.__file__, presets.__file__)",
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    assert all(Path(w).is_relative_to(site) for w in where), where  # the wheel, not the checkout
    assert (site / "tui" / "app.tcss").is_file()

    # every preset, as the checkout lists them
    from engine.config.presets import list_presets

    listed = json.loads(run("presets", "--json").stdout)
    assert sorted(r["name"] for r in listed) == sorted(e.name for e in list_presets(tmp_path / "nohome"))
    assert all(Path(r["path"]).is_relative_to(site) for r in listed)
    assert "quick/digits-fgsm_n-advlc" in run("presets").stdout
    assert "[train]" in run("preset", "show", "quick/digits-fgsm_n-advlc").stdout

    # a foreground run of the default preset, then a detached one through the supervisor
    p = run("run", "quick/digits-fgsm_n-advlc", "--set", "train.epochs=2")
    assert "robust %" in p.stdout and "best/end" in p.stdout  # the summary's two-line header
    run("run", "quick/digits-fgsm_n-advlc", "--set", "train.epochs=1", "--seed", "1", "--detach")
    deadline = time.monotonic() + 300
    while True:
        runs = json.loads(run("runs", "--json").stdout)
        if all(r["state"] in ("finished", "failed", "lost") for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sorted((r["seed"], r["state"], r["epoch"]) for r in runs) == [(0, "finished", 2), (1, "finished", 1)], runs
    for r in runs:
        prov = json.loads((home / "runs" / r["id"] / "runtime.json").read_text())["starts"][-1]  # this start
        assert prov["commit"] is None and prov["version"] == "0.1.0", prov  # not the enclosing repo's commit

    # --write-docs without --docs: one line, nothing written into site-packages
    p = run("bench", "steps", "--write-docs", check=False)
    assert p.returncode == 2 and "--docs" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (site / "docs").exists()
    print(f"wheel check: {time.monotonic() - t0:.1f} s")
