"""The layering of docs/ARCHITECTURE.md: the import contract, no import cycles (imports inside
functions included), few and justified imports inside functions, short functions, the stable
API, and commands that do not compute never importing torch."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "tui")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _imports(mods: dict[str, Path]):
    """(module -> project modules it imports, [(module, line, text) of imports inside functions])."""

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges, inner = {m: set() for m in mods}, []
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        in_func = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            targets = {resolve(n) for n in names} - {None, m}
            edges[m] |= targets
            if id(node) in in_func and targets:
                inner.append((m, node.lineno, ast.unparse(node)))
    return edges, inner


def _cycles(edges: dict[str, set]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_counting_imports_inside_functions():
    edges, _ = _imports(_modules())
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_inside_functions_are_few_and_explained():
    """Only for optional or heavy dependencies, each with its reason on the line or the one above."""
    mods = _modules()
    _, inner = _imports(mods)
    assert len(inner) < 15, inner
    for m, line, text in inner:
        src = mods[m].read_text().splitlines()
        here = src[line - 1] + " " + src[line - 2]
        assert "#" in here, f"{m}:{line}: {text} has no reason beside it"


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body after its docstring: the signature does not count (the formatter
    puts a command's options one per line), nor does the docstring."""
    body = node.body
    if (
        len(body) > 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def test_function_bodies_are_at_most_80_lines():
    long = []
    for m, p in _modules().items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > 80:
                long.append(f"{m}.{node.name}: {_body_lines(node)} lines")
    assert long == []


def test_body_lines_leave_out_the_signature_and_docstring():
    src = 'def f(\n    a,\n    b,\n):\n    """Doc.\n\n    More."""\n    x = 1\n    return x\n'
    [fn] = ast.parse(src).body
    assert _body_lines(fn) == 2


_OPTIMIZER_NAME = re.compile(r"(^|_)(opt|optim|optimizer|optimiser)$")
_OPTIMIZER_CLASS = re.compile(r"(^|\.)(optim\.\w+|SGD|Adam\w*|RMSprop|Adagrad|LBFGS)$")


def _optimizer_steps(source: str) -> list[tuple[str, int]]:
    """(enclosing function, line) of each `X.step()` where X names an optimiser: a name or
    attribute called opt / optim / optimizer (or ending in _opt, ...), or a name bound to
    torch.optim.X(...) / SGD(...) in the same module."""
    tree = ast.parse(source)
    bound = {
        t.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and isinstance(n.value, ast.Call)
        and _OPTIMIZER_CLASS.search(ast.unparse(n.value.func))
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    owner = {}
    for f in ast.walk(tree):
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(f):
                owner[id(n)] = f.name  # walk is outside-in: the innermost function wins
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "step" and not n.args:
            recv = n.func.value
            name = recv.id if isinstance(recv, ast.Name) else recv.attr if isinstance(recv, ast.Attribute) else ""
            if _OPTIMIZER_NAME.search(name) or name in bound:
                out.append((owner.get(id(n), "<module>"), n.lineno))
    return out


def test_optimizer_step_finder_finds_steps():
    src = (
        "import torch\nfrom torch.optim import SGD\n"
        "def a(opt, self):\n    opt.step()\n    self.optimizer.step()\n    sched.step()\n    self.avg.step(3)\n"
        "def b(m):\n    o = torch.optim.SGD(m.parameters(), lr=1)\n    o.step()\n    s = SGD([])\n    s.step()\n"
    )
    assert _optimizer_steps(src) == [("a", 4), ("a", 5), ("b", 10), ("b", 12)]


# the one training loop's step, and the benchmark's copy of the authors' loop it is timed against
OPTIMIZER_STEPS = {("engine.nn.fastpath", "train_step"), ("engine.bench.reference_loop", "reference_step")}


def test_only_the_training_loop_steps_an_optimizer():
    """One training loop: every SGD step of the engine (training runs, Fig. 4b/c's epoch) is
    engine.nn.fastpath.train_step, driven by engine.run.loop.train."""
    found = {(m, f) for m, p in _modules().items() for f, _ in _optimizer_steps(p.read_text())}
    assert found - OPTIMIZER_STEPS == set()
    assert OPTIMIZER_STEPS <= found


def test_analyses_are_plugins_and_the_runner_is_short():
    """Each experiment kind is a module of engine.run.analyses; run_experiment only walks the grid."""
    from engine.config.schema import EXPERIMENT_KINDS
    from engine.run.analyses import ANALYSES

    assert set(ANALYSES) == set(EXPERIMENT_KINDS)
    for kind, module in ANALYSES.items():
        assert all(callable(getattr(module, f, None)) for f in ("check", "grid", "records")), kind
    tree = ast.parse((ROOT / "engine" / "run" / "experiments.py").read_text())
    [fn] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_experiment"]
    assert fn.end_lineno - fn.lineno + 1 < 40


def test_import_contract_holds():
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    p = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout


def test_facade_lazy_names_resolve():
    from engine import facade

    for name in facade._LAZY:
        assert getattr(facade, name) is not None
    assert set(facade.__all__) >= set(facade._LAZY)


def test_stable_api():
    """The names, kinds and defaults of docs/API.md's parameters."""
    from engine.api import advlc_penalty, hessian_spectrum, input_gradient_norm, pgd

    def params(f):
        return [
            (p.name, p.kind.name, None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(f).parameters.values()
        ]

    pos, kw = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"
    assert params(pgd) == [
        ("model", pos, None),
        ("x", pos, None),
        ("y", pos, None),
        ("eps", kw, None),
        ("alpha", kw, None),
        ("steps", kw, None),
        ("random_start", kw, False),
        ("train_mode", kw, False),
    ]
    assert params(advlc_penalty) == [("logits_adv", pos, None), ("logits_clean", pos, None), ("top_n", pos, None)]
    assert params(input_gradient_norm) == [
        ("model", pos, None),
        ("x", pos, None),
        ("y", pos, None),
        ("batch_size", pos, 500),
    ]
    assert params(hessian_spectrum) == [
        ("model", pos, None),
        ("x", pos, None),
        ("y", pos, None),
        ("k", pos, 20),
        ("method", pos, "auto"),
        ("kw", "VAR_KEYWORD", None),
    ]


def test_the_api_module_exports_exactly_api_md_and_the_old_paths_warn():
    """engine.api's names are docs/API.md's table, each row exported; the old shim paths still
    import, with a DeprecationWarning, the same functions."""
    import importlib
    import re
    import warnings

    import engine.api

    rows = re.findall(r"^\| `engine\.api\.([a-z_]+)` \|", (ROOT / "docs" / "API.md").read_text(), re.M)
    assert (
        sorted(rows)
        == sorted(engine.api.__all__)
        == ["advlc_penalty", "hessian_spectrum", "input_gradient_norm", "pgd"]
    )
    for module, names in (
        ("engine.attacks", ["pgd"]),
        ("engine.methods.advlc", ["advlc_penalty"]),
        ("engine.landscape", ["hessian_spectrum", "input_gradient_norm"]),
    ):
        sys.modules.pop(module, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = importlib.import_module(module)
        assert any(issubclass(w.category, DeprecationWarning) and "engine.api" in str(w.message) for w in caught)
        assert mod.__all__ == names and all(getattr(mod, n) is getattr(engine.api, n) for n in names)


@pytest.mark.parametrize(
    "argv",
    [
        ["presets"],
        ["preset", "show", "quick/digits-fgsm_n-advlc"],
        ["runs"],
        ["compare", "--preset", "quick"],
        ["queue"],
    ],
)
def test_commands_that_do_not_compute_do_not_import_torch(argv, tmp_path):
    code = (
        "import sys\nfrom tui.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "ADVLC_HOME": str(tmp_path / "home")}
    p = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
