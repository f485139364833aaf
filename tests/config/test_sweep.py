"""Sweeps: `[sweep]` grids x seeds expand into validated planned runs sharing a group id."""

import textwrap

import pytest

from engine.config.presets import preset_runs, read_sweep, sweep_points
from engine.errors import UserError
from engine.launch.supervisor import create_runs
from engine.store.index import Store


def _user_preset(home, name, text):
    p = home / "presets" / f"{name}.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return f"user/{name}"


def test_lam_sweep_preset_expands_grid_times_seeds(home):
    planned = preset_runs("quick/digits-advlc-lam-sweep", home=home)
    assert [(p.point, p.seed) for p in planned] == [
        ({"method.lam": 0.05}, 0),
        ({"method.lam": 0.05}, 1),
        ({"method.lam": 0.1}, 0),
        ({"method.lam": 0.1}, 1),
        ({"method.lam": 0.3}, 0),
        ({"method.lam": 0.3}, 1),
    ]
    for p in planned:
        assert p.cfg.method.lam == p.point["method.lam"] and p.cfg.train.seed == p.seed
        assert (
            p.cfg.method.name == "advlc"
            and p.cfg.attack.name == "fgsm_n"
            and p.preset == "quick/digits-advlc-lam-sweep"
        )
    rds = create_runs(Store(home), planned)
    runs = [rd.config_json()["run"] for rd in rds]
    groups = {r["group"] for r in runs}
    assert len(groups) == 1 and None not in groups
    assert [r["point"] for r in runs] == [p.point for p in planned]
    assert [rd.config_json()["method"]["lam"] for rd in rds] == [0.05, 0.05, 0.1, 0.1, 0.3, 0.3]
    assert [r["seed"] for r in runs] == [0, 1, 0, 1, 0, 1]


def test_two_axes_both_key_forms_and_coercion(home):
    ref = _user_preset(
        home,
        "grid",
        """
        [preset]
        extends = "quick/digits-fgsm_n-advlc"
        [sweep]
        "attack.eps" = ["4/255", 0.1]
        method.lam = [0.2, 0.4, 0.6]
        "train.lr_milestones" = [[5, 8]]
    """,
    )
    planned = preset_runs(ref, home=home)
    assert len(planned) == 6
    assert [p.point for p in planned] == [
        {"attack.eps": 4 / 255, "method.lam": lam, "train.lr_milestones": [5, 8]} for lam in (0.2, 0.4, 0.6)
    ] + [{"attack.eps": 0.1, "method.lam": lam, "train.lr_milestones": [5, 8]} for lam in (0.2, 0.4, 0.6)]
    for p in planned:
        # derived fields follow the point (FGSM-N step and noise default to eps)
        assert p.cfg.attack.eps == p.cfg.attack.alpha == p.cfg.attack.noise == p.point["attack.eps"]
        assert p.cfg.eval.eps == p.point["attack.eps"]
        assert p.cfg.train.lr_milestones == [5, 8] and p.seed == 0


def test_cli_overrides_on_top(home):
    ref = "quick/digits-advlc-lam-sweep"
    # --set on a swept key pins it: the axis goes, the seeds stay
    planned = preset_runs(ref, ["method.lam=0.2"], home=home)
    assert [(p.point, p.seed, p.cfg.method.lam) for p in planned] == [({}, 0, 0.2), ({}, 1, 0.2)]
    # --set on another key applies to every point
    planned = preset_runs(ref, ["train.epochs=3"], home=home)
    assert len(planned) == 6 and {p.cfg.train.epochs for p in planned} == {3}
    # --seeds replaces [sweep] seeds; --seed (train.seed) is the first seed
    planned = preset_runs(ref, ["train.seed=5"], seeds=3, home=home)
    assert [p.seed for p in planned] == [5, 6, 7] * 3
    # a preset without [sweep]: one run, --seeds gives a group of seeds
    assert [(p.point, p.seed) for p in preset_runs("quick/digits-pgd10", home=home)] == [({}, 0)]
    planned = preset_runs("quick/digits-pgd10", seeds=2, home=home)
    rds = create_runs(Store(home), planned)
    assert rds[0].config().run.group == rds[1].config().run.group is not None
    [single] = create_runs(Store(home), preset_runs("quick/digits-pgd10", home=home))
    assert single.config().run.group is None


def test_sweep_helpers():
    assert sweep_points([]) == [{}]
    assert sweep_points([("a.b", [1, 2]), ("c.d", ["x"])]) == [{"a.b": 1, "c.d": "x"}, {"a.b": 2, "c.d": "x"}]
    assert read_sweep({}, "f") == (None, [])
    assert read_sweep({"sweep": {"seeds": 3}}, "f") == (3, [])


@pytest.mark.parametrize(
    "body,match",
    [
        ('"method.lamb" = [0.1]', r"\[sweep\] unknown key 'method.lamb' \(keys of \[method\]: name, lam"),
        ('"foo.lam" = [0.1]', r"\[sweep\] unknown key 'foo.lam': must be seeds or \"section.key\""),
        ("lam = [0.1]", r"\[sweep\] unknown key 'lam'"),
        ('"method.lam" = 0.3', r"\[sweep\] method.lam = 0.3: must be a list of values"),
        ('"method.lam" = []', r"\[sweep\] method.lam = \[\]: empty list"),
        ("seeds = 0", r"\[sweep\] seeds = 0: must be an integer >= 1"),
        ('seeds = "2"', r"\[sweep\] seeds = '2': must be an integer >= 1"),
        ('"method.lam" = [0.1, -1]', r"\[sweep\]: method.lam = -1.0: must be >= 0"),
        ('"method.lam" = [0.1, "x"]', r"\[sweep\]: method.lam = 'x': must be a number"),
        ('"attack.name" = ["fgsm_n", "nope"]', r"\[sweep\]: attack.name = 'nope': must be one of"),
        # a cross-field rule (AdvLC needs lambda > 0) names the point
        ('"method.lam" = [0.1, 0.0]', r"\[sweep\] method.lam=0.0: method.lam = 0.0: AdvLC needs lambda > 0"),
        ('"preset.description" = ["a"]', r"\[sweep\] unknown key 'preset.description'"),
    ],
)
def test_bad_sweep_tables_one_line_errors(home, body, match):
    ref = _user_preset(
        home,
        "bad",
        f"""
        [preset]
        extends = "quick/digits-fgsm_n-advlc"
        [sweep]
        {body}
    """,
    )
    with pytest.raises(UserError, match=match) as exc:
        preset_runs(ref, home=home)
    msg = str(exc.value)
    assert "\n" not in msg and "bad.toml" in msg


def test_sweep_must_be_a_table(home):
    ref = _user_preset(
        home,
        "notable",
        """
        sweep = [1, 2]
        [preset]
        extends = "quick/digits-fgsm_n-advlc"
    """,
    )
    with pytest.raises(UserError, match=r"notable.toml: 'sweep' must be a table \[sweep\]"):
        preset_runs(ref, home=home)
