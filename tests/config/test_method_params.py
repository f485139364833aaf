"""Each method owns its parameters: a dataclass in its module, read by the registry without
importing it, set from `[method.<name>]` tables, `--set method.<name>.key=...` and sweeps, stored
as the run's method's table only; the flat keys of earlier versions still read, in presets,
overrides and stored runs (tests/data/store-v1), with the same meaning. An experiment kind's
parameters are its `[experiment.<kind>]` table the same way."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import cli

from engine.config import origin as O
from engine.config import schema as C
from engine.config.presets import load_preset, plan
from engine.errors import UserError
from engine.nn import methods as registry
from engine.nn.methods.context import StepContext

V1 = Path(__file__).resolve().parents[1] / "data" / "store-v1"
OLD_ADVLC = "5daa2c56"  # quick/digits-pgd10-advlc (top_n = 50) stored with the flat method keys

THROWAWAY = textwrap.dedent('''
    """A method made up for a test: CE on the clean batch times a scale, plus an offset."""

    from dataclasses import dataclass
    from typing import ClassVar

    import torch.nn.functional as F

    from engine.nn.methods import register
    from engine.sections import opt


    @dataclass
    class ScaledParams:
        """[method.scaled_ce]: the two knobs."""

        scale: float = opt(2.0, "Factor of the CE.", min=0.0, max=10.0)
        offset: float = opt(0.5, "Added to the loss.", min=-1.0, max=1.0)
        FLAT_KEYS: ClassVar[dict[str, str]] = {"ce_scale": "scale"}

        def problem(self):
            return "method.scaled_ce: scale 0 with offset 0 trains nothing" if self.scale == self.offset == 0 else None


    @register("scaled_ce", fixed_attack="none", params=ScaledParams, doc="scale * CE(f(x)) + offset.")
    def scaled_ce(model, x, y, ctx):
        logits = model(x)
        p = ctx.params
        return p.scale * F.cross_entropy(logits, y) + p.offset, {"logits": logits}
''')


@pytest.fixture
def throwaway(monkeypatch):
    """The registry with one more method module, `scaled_ce.py`, in the methods package."""
    path = Path(registry.__file__).parent / "scaled_ce.py"
    path.write_text(THROWAWAY)
    registry.methods.cache_clear()
    try:
        yield path
    finally:
        path.unlink()
        registry.methods.cache_clear()
        registry._FUNCTIONS.pop("scaled_ce", None)
        registry._DECLARED.pop("scaled_ce", None)
        sys.modules.pop("engine.nn.methods.scaled_ce", None)


def test_a_new_method_with_two_knobs_is_one_file(throwaway):
    m = registry.get_method("scaled_ce")
    assert [(f.name, f.default) for f in dataclasses.fields(m.params)] == [("scale", 2.0), ("offset", 0.5)]
    cfg = C.build(
        {"method": {"name": "scaled_ce", "scaled_ce": {"scale": 3}}}, "test.toml", ["method.scaled_ce.offset=-0.25"]
    )
    assert (cfg.method.params.scale, cfg.method.params.offset) == (3.0, -0.25)
    assert cfg.to_dict()["method"] == {
        "name": "scaled_ce",
        "lam": 0.0,
        "lam_schedule": "constant",
        "scaled_ce": {"scale": 3.0, "offset": -0.25},
    }
    # the loss reads them: against the formula computed here
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    loss, _ = m.loss(model, x, y, StepContext(cfg=cfg, epoch=0, lam=0.0))
    expected = 3.0 * torch.nn.functional.cross_entropy(model(x), y) - 0.25
    torch.testing.assert_close(loss, expected)
    # what the decorator registered when the module ran equals what was read without importing it
    assert [
        (f.name, f.type, f.default, dict(f.metadata))
        for f in dataclasses.fields(registry._DECLARED["scaled_ce"].params)
    ] == [(f.name, f.type, f.default, dict(f.metadata)) for f in dataclasses.fields(m.params)]
    # validation from the field's metadata, the class's own rule, its old flat key, the docs
    with pytest.raises(
        UserError, match=r"^--set method.scaled_ce.scale=11: method.scaled_ce.scale = 11.0: must be between 0 and 10$"
    ):
        C.build({"method": {"name": "scaled_ce"}}, "test.toml", ["method.scaled_ce.scale=11"])
    with pytest.raises(UserError, match=r"^t.toml: method.scaled_ce: scale 0 with offset 0 trains nothing$"):
        C.build({"method": {"name": "scaled_ce", "scaled_ce": {"scale": 0, "offset": 0}}}, "t.toml")
    assert C.build({"method": {"name": "scaled_ce", "ce_scale": 4}}, "t.toml").method.params.scale == 4.0
    assert "method.scaled_ce.offset" in {r["key"] for r in C.schema()} and "method.scaled_ce.scale" in C.config_keys()


def test_every_parameters_class_read_equals_the_one_the_module_defines():
    for name, m in C.with_params().items():
        module = sys.modules.get(f"engine.nn.methods.{m.module}") or __import__(f"engine.nn.methods.{m.module}")
        declared = registry._DECLARED[name].params
        assert declared.__name__ == m.params.__name__
        assert [(f.name, f.type, f.default, dict(f.metadata)) for f in dataclasses.fields(declared)] == [
            (f.name, f.type, f.default, dict(f.metadata)) for f in dataclasses.fields(m.params)
        ], (name, module)
        assert getattr(declared, "FLAT_KEYS", {}) == getattr(m.params, "FLAT_KEYS", {})
    assert sorted(C.with_params()) == [
        "advlc",
        "advlc_js",
        "advlc_kl",
        "advlc_l1",
        "advlc_nuclear",
        "advlc_sql2",
        "consistency",
        "cure",
        "kdsa",
    ]


def test_a_parameters_class_using_an_outside_name_is_refused(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text(
        "import torch\nfrom dataclasses import dataclass\n\n@dataclass\nclass P:\n"
        "    scale: float = torch.pi\n\n@register('bad', doc='x', params=P)\ndef bad(model, x, y, ctx):\n    pass\n"
    )
    with pytest.raises(RuntimeError, match=r"bad.py:8: class P uses a name the registry does not give it"):
        registry._read_module(f)
    f.write_text("@register('bad', doc='x', params=Missing)\ndef bad(model, x, y, ctx):\n    pass\n")
    with pytest.raises(RuntimeError, match=r"no class Missing at the top of bad.py"):
        registry._read_module(f)


def test_tables_of_other_methods_are_kept_until_the_method_is_known():
    """A base preset may set several methods' tables (robust-overfitting sweeps pgd and advlc):
    each run keeps its own method's table, stored alone."""
    p = plan("quick/robust-overfitting")
    by_method = {r.cfg.method.name: r.cfg for r in p.runs}
    assert by_method["advlc"].method.params.top_n == 25
    assert by_method["pgd"].method.params is None and "advlc" not in by_method["pgd"].to_dict()["method"]
    assert by_method["advlc"].to_dict()["method"]["advlc"] == {"top_n": 25, "clean": "start"}
    # a --set of a method the plan trains with: taken where it applies
    p = plan("quick/robust-overfitting", ["method.advlc.top_n=7"])
    assert {r.cfg.method.name: getattr(r.cfg.method.params, "top_n", None) for r in p.runs} == {"pgd": None, "advlc": 7}
    # ... and of one it does not: one line
    with pytest.raises(
        UserError,
        match=r"^--set method.kdsa.temperature=3: no run of presets/quick/robust-overfitting"
        r".toml trains with method 'kdsa' \(method.name: 'advlc', 'pgd'\)",
    ):
        plan("quick/robust-overfitting", ["method.kdsa.temperature=3"])
    with pytest.raises(UserError, match=r"method.kdsa.temperature=3: no run of .* trains with method 'kdsa'"):
        load_preset("quick/digits-pgd10-advlc", ["method.kdsa.temperature=3"])


def test_a_sweep_over_a_method_parameter(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "presets").mkdir(parents=True)
    (home / "presets" / "t.toml").write_text(
        '[preset]\nextends = "quick/digits-fgsm_n-advlc"\n[sweep]\n"method.advlc.top_n" = [5, 9]\n'
        'method.advlc.clean = ["x"]\n'
    )
    runs = plan("user/t", home=home).runs
    assert [(r.point, r.cfg.method.params.top_n, r.cfg.method.params.clean) for r in runs] == [
        ({"method.advlc.top_n": 5, "method.advlc.clean": "x"}, 5, "x"),
        ({"method.advlc.top_n": 9, "method.advlc.clean": "x"}, 9, "x"),
    ]
    (home / "presets" / "t.toml").write_text(
        '[preset]\nextends = "quick/digits-fgsm_n-advlc"\n[sweep]\n"method.advlc.nope" = [1]\n'
    )
    with pytest.raises(
        UserError, match=r"\[sweep\] unknown key 'method.advlc.nope' \(keys of \[method\]: .*advlc.top_n"
    ):
        plan("user/t", home=home)


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "method.nope.x=1",
            r"unknown table \[method.nope\]: no such method \(tables: method.advlc,",
        ),
        ("method.pgd.x=1", r"unknown table \[method.pgd\]: method 'pgd' has no parameters of its own"),
        ("method.advlc.nope=1", r"unknown key 'method.advlc.nope' \(keys of \[method.advlc\]: top_n, clean\)"),
        ("method.advlc.clean=y", r"method.advlc.clean = 'y': must be one of 'start', 'x'"),
        ("method.a.b.c=1", r"key must be section.key \(e.g. attack.eps\), method.<name>.key"),
        ("attack.eps.x=1", r"key must be section.key"),
    ],
)
def test_bad_method_keys_are_one_line(text, message):
    with pytest.raises(UserError, match=message):
        load_preset("quick/digits-pgd10-advlc", [text])


def test_old_flat_keys_read_as_each_owners_parameter():
    """Presets and overrides written with the flat keys mean what they meant."""
    old = C.build(
        {
            "attack": {"name": "pgd"},
            "method": {
                "name": "kdsa",
                "kd_temperature": 3.0,
                "kd_alpha_std": 0.2,
                "kd_adv_checkpoint": "end",
                "top_n": 7,
                "temperature": 9.0,
            },
        },
        "t",
    )
    new = C.build(
        {
            "attack": {"name": "pgd"},
            "method": {"name": "kdsa", "kdsa": {"temperature": 3.0, "alpha_std": 0.2, "adversarial_checkpoint": "end"}},
        },
        "t",
    )
    assert old.to_dict() == new.to_dict()
    assert old.to_dict()["method"]["kdsa"]["temperature"] == 3.0  # not consistency's `temperature`
    _, cfg, _ = load_preset("quick/digits-fgsm_n-advlc", ["method.top_n=11", "method.clean=x"])
    assert (cfg.method.params.top_n, cfg.method.params.clean) == (11, "x")
    _, cfg, _ = load_preset("quick/digits-cure", ["method.cure_form=original"])
    assert cfg.method.params.form == "original"
    with pytest.raises(UserError, match=r"method.kdsa.alpha_std = 2.0: must be between 0 and 1"):
        C.build({"attack": {"name": "pgd"}, "method": {"name": "kdsa", "kd_alpha_std": 2}}, "t")


def test_a_run_stored_with_the_flat_keys_reads_as_today_and_groups_with_a_new_run():
    stored = json.loads((V1 / "runs" / OLD_ADVLC / "config.json").read_text())
    assert stored["method"]["top_n"] == 50 and "advlc" not in stored["method"]
    cfg = C.from_json(stored)
    assert (cfg.method.params.top_n, cfg.method.params.clean) == (50, "start")
    flat = O.flat(stored)
    assert flat["method.advlc.top_n"] == 50 and not any(k in flat for k in ("method.top_n", "method.kdsa.temperature"))
    # a run made today from the same preset and overrides is a seed of the same configuration
    overrides = [
        f"{k}={O.fmt_value(v)}"
        for k, v in O.flat(stored).items()
        if k.split(".")[0] in ("train", "eval") and k not in O.NON_RESULT_KEYS
    ]
    [p] = plan("quick/digits-pgd10-advlc", overrides).runs
    assert O.config_key(p.cfg.to_dict()) == O.config_key(stored)
    assert O.config_key(
        {**p.cfg.to_dict(), "method": {**p.cfg.to_dict()["method"], "advlc": {"top_n": 51, "clean": "start"}}}
    ) != O.config_key(stored)


def test_the_cli_shows_selects_and_columns_method_parameters(tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(V1, home)
    monkeypatch.setenv("ADVLC_HOME", str(home))
    _, out, _ = cli("runs", "--where", "method.advlc.top_n == 50", "--json", code=0)
    assert [r["id"] for r in json.loads(out)] == [OLD_ADVLC]
    _, out, _ = cli("runs", "--where", "method.advlc.top_n == 49", "--json", code=0)
    assert json.loads(out) == []
    _, out, _ = cli(
        "compare",
        "--preset",
        "quick/digits-pgd10-advlc",
        "--columns",
        "method.advlc.top_n",
        "--include-unfinished",
        "--format",
        "json",
        code=0,
    )
    assert [r["config_values"]["method.advlc.top_n"] for r in json.loads(out)["rows"]] == [50]
    _, _, err = cli("runs", "--where", "method.top_n == 50", code=2)
    assert "method.advlc.top_n" in err  # the old name is pointed to the new one
    _, out, _ = cli("preset", "show", "paper/table1/pgd10-kdsa", "--json", code=0)
    assert json.loads(out)["config"]["method"]["kdsa"]["temperature"] == 2.0


def test_the_registry_still_loads_without_torch():
    code = (
        "import sys\nfrom engine.config import schema as C\n"
        "assert C.with_params()['kdsa'].params().temperature == 2.0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_an_experiment_kind_owns_its_parameters():
    """[experiment.<kind>] like [method.<name>]: the kind's table, stored alone, old flat keys read."""
    _, cfg, _ = load_preset("quick/digits-fig4b", ["experiment.fig4b.lr=0.5"])
    assert (cfg.experiment.params.lr, cfg.experiment.params.values) == (0.5, [0.0, 0.25, 0.5, 0.75, 1.0])
    stored = cfg.to_dict()["experiment"]
    assert set(stored) == {"kind", "source", "ckpt", "samples", "fig4b"} and stored["fig4b"]["lr"] == 0.5
    _, old, _ = load_preset("quick/digits-fig4b", ["experiment.lr=0.5"])
    assert old.to_dict() == cfg.to_dict()
    with pytest.raises(UserError, match=r"no run of .* is an experiment of kind 'a1' \(experiment.kind: 'fig4b'\)"):
        load_preset("quick/digits-fig4b", ["experiment.a1.steps=[1]"])
    with pytest.raises(
        UserError, match=r"keys of \[experiment\]: kind, source, ckpt, samples and a table \[experiment.<kind>\]"
    ):
        load_preset("quick/digits-fig4b", ["experiment.fig4b=1"])
    with pytest.raises(UserError, match=r"unknown table \[experiment.fig9\]: no such experiment kind"):
        load_preset("quick/digits-fig4b", ["experiment.fig9.values=[1]"])
    with pytest.raises(UserError, match=r"experiment.fig4c.flip_unit = 'row': must be one of 'sample', 'element'"):
        load_preset("quick/digits-fig4c", ["experiment.fig4c.flip_unit=row"])
    # a stored experiment run with the flat keys reads as today's
    flat_stored = {
        **cfg.to_dict(),
        "experiment": {
            "kind": "fig4b",
            "source": "",
            "ckpt": "end",
            "samples": 300,
            "values": [0.0, 1.0],
            "lr": 0.5,
            "flip_unit": "sample",
            "random_values": 3,
            "steps": [1],
            "splits": ["test"],
        },
    }
    back = C.from_json(flat_stored)
    assert (back.experiment.params.values, back.experiment.params.lr) == ([0.0, 1.0], 0.5)
    assert O.flat(flat_stored)["experiment.fig4b.values"] == [0.0, 1.0]
    assert "experiment.fig4b.random_values" not in O.flat(flat_stored)  # fig4a's, not fig4b's
    # a training run has no experiment table
    assert C.RunConfig().to_dict()["experiment"] == {"kind": "", "source": "", "ckpt": "end", "samples": 2000}
