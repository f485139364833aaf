"""Presets, overrides and validation: bad input is one line naming file, key, value and what is allowed."""

import pytest

from engine.config import schema as C
from engine.config.presets import list_presets, load_preset
from engine.errors import UserError


def _err(data, overrides=None):
    with pytest.raises(UserError) as ei:
        C.build(data, "p.toml", overrides)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_every_preset_resolves():
    names = [e.name for e in list_presets()]
    for required in (
        "quick/digits-standard",
        "quick/digits-fgsm_n",
        "quick/digits-fgsm_n-advlc",
        "quick/digits-pgd10",
        "quick/digits-pgd10-advlc",
        "paper/table1/standard",
        "paper/table1/fgsm_n",
        "paper/table1/fgsm_n-advlc",
        "paper/table1/pgd10",
        "paper/table1/pgd10-advlc",
    ):
        assert required in names
    for n in names:
        load_preset(n)


def test_paper_presets_carry_the_paper_hyperparameters():
    _, c, _ = load_preset("paper/table1/fgsm_n-advlc")
    assert (c.data.dataset, c.model.arch, c.train.epochs, c.train.batch_size) == (
        "cifar10",
        "preact_resnet18",
        200,
        100,
    )
    assert (c.train.lr, c.train.lr_milestones, c.train.momentum, c.train.weight_decay) == (0.1, [100, 150], 0.9, 1e-4)
    assert abs(c.attack.eps - 8 / 255) < 1e-12 and c.attack.alpha == c.attack.eps and c.attack.noise == c.attack.eps
    assert (c.method.name, c.method.lam, c.method.params.top_n) == ("advlc", 0.55, 100)
    _, p, _ = load_preset("paper/table1/pgd10-advlc")
    assert (p.attack.name, p.attack.steps, p.attack.random_start, p.method.lam) == ("pgd", 10, False, 0.4)
    assert abs(p.attack.alpha - 2 / 255) < 1e-12 and abs(p.eval.pgd_alpha - 2 / 255) < 1e-12 and p.eval.pgd_steps == 10


def test_overrides_are_type_checked():
    c = C.build(
        {"method": {"name": "pgd"}},
        "p.toml",
        ["attack.eps=8/255", "train.epochs=3", "train.lr_milestones=[1,2]", "attack.random_start=true"],
    )
    assert abs(c.attack.eps - 8 / 255) < 1e-12 and c.train.epochs == 3
    assert c.train.lr_milestones == [1, 2] and c.attack.random_start is True
    assert abs(c.attack.alpha - 2 / 255) < 1e-12  # derived after the override


@pytest.mark.parametrize(
    "data,overrides,needles",
    [
        ({"attack": {"epz": 1}}, None, ["p.toml", "attack.epz", "eps"]),
        ({"attack": {"eps": 2}}, None, ["p.toml", "attack.eps = 2.0", "between 0 and 1"]),
        ({"train": {"epochs": "ten"}}, None, ["train.epochs", "'ten'", "integer"]),
        ({"train": {"epochs": 0}}, None, ["train.epochs = 0", "between 1 and 100000"]),
        ({"model": {"arch": "vgg"}}, None, ["model.arch = 'vgg'", "preact_resnet18"]),
        ({"method": {"name": "nope"}}, None, ["method.name = 'nope'", "advlc"]),
        ({"method": {"name": "advlc"}}, None, ["attack.name is empty", "fgsm_n"]),
        (
            {"method": {"name": "advlc", "lam": 0.5}, "attack": {"name": "fgsm_n"}},
            ["train.lr=abc"],
            ["--set train.lr=abc", "number"],
        ),
        ({"method": {"name": "pgd"}, "attack": {"name": "fgsm"}}, None, ["attack.name = 'fgsm'", "'pgd'"]),
        ({"foo": {}}, None, ["unknown table [foo]"]),
        ({"train": {"device": "tpu"}}, None, ["train.device = 'tpu'"]),
        ({}, ["nodot=1"], ["section.key"]),
        ({}, ["train.epochs"], ["section.key=value"]),
    ],
)
def test_errors_name_file_key_value_and_allowed(data, overrides, needles):
    msg = _err(data, overrides)
    for n in needles:
        assert n in msg, (n, msg)


def test_fraction_and_bool_coercion():
    assert C.coerce("8/255", float) == 8 / 255
    assert C.coerce("yes", bool) is True
    for bad, tp in (("1/0", float), ("nan", float), (True, int), (1.5, int), ("x", bool)):
        with pytest.raises(ValueError):
            C.coerce(bad, tp)


def test_extends_merges_and_reports_child_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLC_HOME", str(tmp_path))
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mine.toml").write_text(
        '[preset]\nextends = "quick/digits-pgd10"\n[train]\nepochs = 2\n[attack]\neps = 0.5\n'
    )
    name, c, _ = load_preset("user/mine")
    assert name == "user/mine" and c.train.epochs == 2 and c.attack.eps == 0.5 and c.method.name == "pgd"
    assert c.data.dataset == "digits"
    (tmp_path / "presets" / "bad.toml").write_text('[preset]\nextends = "quick/digits-pgd10"\n[train]\nepochs = -1\n')
    with pytest.raises(UserError, match=r"bad.toml: train.epochs = -1"):
        load_preset("user/bad")


def test_schema_documents_every_field():
    rows = C.schema()
    assert len(rows) > 40
    assert all(r["doc"] for r in rows), [r["key"] for r in rows if not r["doc"]]


def test_string_override_keeps_digits_as_written():
    """A run id made of digits (e.g. 18246532) is a string: --set must not turn it into a number."""
    cfg = C.apply_overrides(C.RunConfig(), ["experiment.source=18246532", "preset.description=007"])
    assert cfg.experiment.source == "18246532" and cfg.preset.description == "007"
    with pytest.raises(UserError, match="must be a string"):
        C.from_dict({"experiment": {"source": 18246532}}, "x.toml")  # in a TOML file, quote it
