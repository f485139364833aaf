"""The method registry: what it reads from the source files without importing them equals what the
decorators register, it loads without torch, and a non-literal registration is refused."""

import importlib
import subprocess
import sys

import pytest

from engine.nn import methods as registry


def test_metadata_read_without_import_equals_what_the_decorators_register():
    read = registry.methods()
    for m in {m.module for m in read.values()}:
        importlib.import_module(f"engine.nn.methods.{m}")
    assert set(registry._DECLARED) == set(read)
    for name, m in read.items():
        assert registry._DECLARED[name] == m, name
    assert read["consistency"].needs == ("raw_batch", "doubled_batch")
    assert read["kdsa"].teachers == ("standard", "adversarial")
    assert {n for n, m in read.items() if m.double_backprop} == {"igr", "cure", "gradalign", "eq10_grad_penalty"}


def test_registry_and_config_validation_load_without_torch():
    code = (
        "import sys\nfrom engine.config.presets import load_preset\n"
        "from engine.config import schema as C\nname, cfg, _ = load_preset('quick/digits-pgd10-advlc')\n"
        "assert C.label(cfg) == 'pgd+advlc', C.label(cfg)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_a_registration_with_a_computed_argument_is_refused(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text('DOC = "x"\n\n@register("bad", doc=DOC)\ndef bad(model, x, y, ctx):\n    pass\n')
    with pytest.raises(RuntimeError, match=r"bad.py:3: register\(\) arguments must be literals"):
        registry._read_module(f)
    f.write_text('@register("bad", doc="x", needs=("telepathy",))\ndef bad(model, x, y, ctx):\n    pass\n')
    with pytest.raises(RuntimeError, match="unknown needs"):
        registry._read_module(f)


def test_lambda_rules_are_one_line_errors():
    from engine.config.schema import RunConfig
    from engine.errors import UserError

    cfg = RunConfig()
    cfg.method.lam = 0.0
    with pytest.raises(UserError, match=r"p.toml: method.lam = 0.0: CURE needs lambda > 0 \(paper: 1500"):
        registry.get_method("cure").validate(cfg, "p.toml")
    cfg.method.lam = 1.5
    with pytest.raises(UserError, match=r"Eq. 9's alpha must be in \[0, 1\]"):
        registry.get_method("eq9_clean_loss").validate(cfg, "p.toml")
    registry.get_method("standard").validate(cfg, "p.toml")  # no rule
