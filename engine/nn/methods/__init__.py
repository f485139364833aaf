"""The registry of training objectives. It loads without torch, so configs, presets and docs can
read every method's metadata in a command that never trains.

Each module of this package defines objectives and registers each under its paper name:

    @register("advlc", lam="> 0", lam_error="AdvLC needs lambda > 0 (paper: 0.55 with FGSM-N, 0.4 with PGD10)",
              doc="AdvLC: adversarial CE + lambda * top-N |f(x+delta) - f(x)| ...")
    def advlc(model, x, y, ctx):       # -> (loss, stats)
        ...

`x` is the (augmented) float batch in [0, 1], `ctx` a `StepContext` (engine.nn.methods.context:
config, epoch, scheduled lambda, the bound training attack, extras), `loss` the scalar to
back-propagate and `stats` a dict of tensors (no host sync) with at least `logits`, the outputs
the training accuracy is measured on. Adding a method is one new file here plus a preset.

How the registry knows a method without importing it: `register(...)` takes literal arguments
only, and `methods()` reads those calls from the package's source files (with `ast`, no
execution). A method's module, and torch with it, is imported when its loss is first called.
tests/nn/test_methods.py checks that what is read this way equals what the decorators register.

What a method declares about itself (register's keyword arguments):
    fixed_attack  plain methods: the attack their name implies ("none" for standard training);
                  regularisers leave it None and take `attack.name`
    attacks       the training attacks a regulariser combines with
    lam           the allowed method.lam: "> 0", "0..1" or None (anything)
    lam_error     what a method.lam outside it is told, with the paper's value
    paper_lam     the paper's strength (with FGSM-N, with PGD10), Sec. 5.1
    needs         "raw_batch": the un-augmented uint8 batch in ctx.extras["x_unaugmented"];
                  "double_backprop": its loss differentiates an input gradient (no torch.compile);
                  "doubled_batch": it trains on a 2B batch (two views)
    teachers      roles of the teacher runs it distils from (ctx.extras["teachers"][role])
    params        its parameters class: the keys of its own table `[method.<name>]`

A method with knobs of its own declares them as a dataclass in its module, next to its loss,
each field an `opt(default, doc, min=, max=, choices=)` (engine.sections), and names it in
`register(..., params=KDSAParams)`; the loss reads them as `ctx.params.temperature`:

    @dataclass
    class KDSAParams:
        '''[method.kdsa]: ...'''
        temperature: float = opt(2.0, "Distillation temperature T.", min=1e-6, max=1000.0)
        FLAT_KEYS: ClassVar[dict[str, str]] = {"kd_temperature": "temperature"}

        def problem(self) -> str | None:      # optional: a rule across fields, as one line
            ...

The registry reads that class without importing the module: it executes the class statement
alone (its body may use only `opt`, `dataclass`, `ClassVar` and builtins). `FLAT_KEYS` maps the
keys the parameters had before methods owned them (flat in `[method]`) to their names here.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, ClassVar

from engine.errors import UserError
from engine.sections import RunConfig, opt

TRAIN_ATTACKS = ("fgsm", "fgsm_rs", "fgsm_n", "pgd")
NEEDS = ("raw_batch", "double_backprop", "doubled_batch")
LAM_RULES = (None, "> 0", "0..1")


@dataclass(frozen=True)
class Method:
    """A registered method: its metadata, and its loss (imported on first use)."""

    name: str
    module: str  # module under engine.nn.methods, e.g. "advlc"
    doc: str
    fixed_attack: str | None = None
    attacks: tuple[str, ...] = TRAIN_ATTACKS
    lam: str | None = None
    lam_error: str = ""
    paper_lam: tuple[float, float] | None = None
    needs: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()
    params: type | None = field(default=None, compare=False)  # the dataclass of [method.<name>], or None

    def loss(self, model, x, y, ctx):
        return loss_function(self.name)(model, x, y, ctx)

    @property
    def double_backprop(self) -> bool:
        return "double_backprop" in self.needs

    def validate(self, cfg: RunConfig, where: str) -> None:
        """The method's rule for method.lam, as one UserError line."""
        lam = cfg.method.lam
        if (self.lam == "> 0" and lam <= 0) or (self.lam == "0..1" and not 0.0 <= lam <= 1.0):
            raise UserError(f"{where}: method.lam = {lam}: {self.lam_error or self.name + ' needs ' + self.lam}")


_FUNCTIONS: dict[str, Callable] = {}
_DECLARED: dict[str, Method] = {}
"""What the decorators registered when the modules ran (checked against `methods()` by the tests)."""


def register(
    name: str,
    *,
    doc: str,
    fixed_attack: str | None = None,
    attacks: tuple[str, ...] = TRAIN_ATTACKS,
    lam: str | None = None,
    lam_error: str = "",
    paper_lam: tuple[float, float] | None = None,
    needs: tuple[str, ...] = (),
    teachers: tuple[str, ...] = (),
    params: type | None = None,
):
    """Decorator: register `fn(model, x, y, ctx) -> (loss, stats)` under `name` (literal arguments only)."""

    def deco(fn):
        if name in _FUNCTIONS:
            raise RuntimeError(f"method {name!r} registered twice")
        _FUNCTIONS[name] = fn
        _DECLARED[name] = Method(
            name,
            fn.__module__.rpartition(".")[2],
            doc,
            fixed_attack,
            tuple(attacks),
            lam,
            lam_error,
            None if paper_lam is None else tuple(paper_lam),
            tuple(needs),
            tuple(teachers),
            params,
        )
        return fn

    return deco


def _literal(node: ast.expr, where: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise RuntimeError(
            f"{where}: register() arguments must be literals (the registry reads them without importing the module)"
        ) from None


PARAMS_NAMESPACE = {"opt": opt, "dataclass": dataclass, "ClassVar": ClassVar, "Any": Any}
"""All a parameters class statement may use besides builtins (the registry runs it alone)."""


def _params_class(tree: ast.Module, node: ast.expr, path: Path, where: str) -> type:
    """The parameters class `register(params=Name)` names: its class statement, found at the top of
    the module, executed alone (so without the module's imports, torch among them)."""
    if not isinstance(node, ast.Name):
        raise RuntimeError(f"{where}: register(params=...) must name a class defined in {path.name}")
    found = [c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == node.id]
    if not found:
        raise RuntimeError(f"{where}: register(params={node.id}): no class {node.id} at the top of {path.name}")
    namespace = dict(PARAMS_NAMESPACE, __name__=f"{__name__}.{path.stem}")
    try:
        code = compile(ast.Module(body=found, type_ignores=[]), str(path), "exec", dont_inherit=True)
        exec(code, namespace)  # noqa: S102 - the class statement of a module of this package
    except NameError as exc:
        raise RuntimeError(
            f"{where}: class {node.id} uses a name the registry does not give it ({exc}); "
            f"a parameters class may use only {', '.join(PARAMS_NAMESPACE)}"
        ) from None
    cls = namespace[node.id]
    if not dataclasses.is_dataclass(cls):
        raise RuntimeError(f"{where}: class {node.id} must be a @dataclass")
    return cls


def _read_module(path: Path) -> list[Method]:
    out = []
    tree = ast.parse(path.read_text(), str(path))
    classes: dict[str, type] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Name) and dec.func.id == "register":
                where = f"{path.name}:{dec.lineno}"
                kw = {k.arg: (None if k.arg == "params" else _literal(k.value, where)) for k in dec.keywords}
                for k in dec.keywords:
                    if k.arg == "params" and not (isinstance(k.value, ast.Constant) and k.value.value is None):
                        key = getattr(k.value, "id", "")
                        if key not in classes:  # one class object per module, shared by its methods
                            classes[key] = _params_class(tree, k.value, path, where)
                        kw["params"] = classes[key]
                name = _literal(dec.args[0], where)
                for key in ("attacks", "paper_lam"):
                    if kw.get(key) is not None:
                        kw[key] = tuple(kw[key])
                for key in ("needs", "teachers"):
                    kw[key] = tuple(kw.get(key, ()))
                bad = [n for n in kw["needs"] if n not in NEEDS]
                if bad or kw.get("lam") not in LAM_RULES:
                    raise RuntimeError(f"{where}: unknown needs {bad} or lam rule {kw.get('lam')!r}")
                out.append(Method(name, path.stem, **kw))
    return out


@lru_cache(maxsize=1)
def methods() -> dict[str, Method]:
    """Every registered method by name, read from the package's source files (no import)."""
    out: dict[str, Method] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for m in _read_module(path):
            if m.name in out:
                raise RuntimeError(f"method {m.name!r} registered twice ({out[m.name].module}, {m.module})")
            out[m.name] = m
    return out


def get_method(name: str) -> Method:
    try:
        return methods()[name]
    except KeyError:
        raise UserError(f"unknown method {name!r} (known: {', '.join(sorted(methods()))})") from None


def loss_function(name: str) -> Callable:
    """The registered loss of method `name` (imports its module on first use)."""
    if name not in _FUNCTIONS:
        importlib.import_module(f"{__name__}.{get_method(name).module}")
    return _FUNCTIONS[name]


def lam_at(cfg: RunConfig, epoch: int) -> float:
    """The scheduled regularisation strength at 0-based `epoch`."""
    m = cfg.method
    if m.lam_schedule == "linear":
        return m.lam * (epoch + 1) / cfg.train.epochs
    return m.lam
