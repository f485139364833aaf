"""The sections of a run's config as plain dataclasses, each field with its documentation and
allowed values (`opt`). They sit below every layer, like engine.errors, so the tensor code
(engine.nn) can name the sections it reads; reading them from TOML and overrides, and the
checks against the method registry, are engine.config.schema's.

Perturbation sizes are in [0, 1] pixel units.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar


def opt(default, doc: str, *, unit: str = "", choices=None, min=None, max=None, factory=None):
    """A dataclass field with its documentation and its allowed values."""
    meta = {"doc": doc, "unit": unit, "choices": choices, "min": min, "max": max}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DATASETS = ("digits", "cifar10", "cifar100", "svhn", "tinyimagenet", "synthetic")
ARCHS = ("cnn_small", "preact_resnet18", "wide_resnet")
ATTACKS = ("none", "fgsm", "fgsm_rs", "fgsm_n", "pgd")
DEVICES_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")

# Upper bounds of the integer fields: no value passes validation that fails later with a traceback
# (a seed torch or numpy refuses) or asks for absurd work (a batch of 2**70 images).
SEED_MAX = 2**32 - 1
"""The largest seed: numpy's RandomState takes 0 ... 2**32 - 1 (torch.manual_seed up to 2**64 - 1);
the trainer's derived seeds (seed + 1 + 1_000_003 * (epoch + 1), ...) stay below 2**64."""
MAX_EPOCHS = 100_000
"""Epochs, and epoch counts (milestones, every N epochs, SWA's start)."""
MAX_IMAGES = 10_000_000
"""Image counts (the first N images, samples of a metric) and counts of batches or entries."""
MAX_BATCH = 1_000_000
"""Batch sizes, in images."""


@dataclass
class PresetInfo:
    """[preset]: what the preset is and which part of the paper it reproduces."""

    description: str = opt("", "One-line description shown in `advlc presets` and the app.")
    reference: str = opt("", "The paper table/figure row this preset reproduces, if any.")
    extends: str = opt("", "Name of a preset whose tables this one starts from (keys here win).")


@dataclass
class DataConfig:
    """[data]: the dataset, where it is read from, and training augmentation."""

    dataset: str = opt("digits", "Dataset name.", choices=DATASETS)
    root: str = opt(
        "",
        "Folder holding the dataset in torchvision's on-disk format "
        "(e.g. ROOT/cifar-10-batches-py). Unused for digits and synthetic.",
    )
    download: bool = opt(False, "Let torchvision download the dataset into `root` if it is missing.")
    n_train: int = opt(0, "Use only the first N training images (0 = all).", unit="images", min=0, max=MAX_IMAGES)
    crop_padding: int = opt(4, "Random-crop padding for training images (0 = no crop).", unit="px", min=0, max=32)
    flip: bool = opt(True, "Random horizontal flip of training images.")
    split_seed: int = opt(0, "Seed of the fixed train/test split (digits only).", min=0, max=SEED_MAX)
    label_noise: float = opt(
        0.0,
        "Symmetric label noise: this fraction of the (first n_train) training labels is replaced by a "
        "different class drawn uniformly, once, from a generator seeded by split_seed (the same noisy "
        "training set for every train.seed; Dong et al. 2021). Test labels are never changed.",
        unit="fraction",
        min=0.0,
        max=1.0,
    )
    val_size: int = opt(
        0,
        "Validation split: this many images held out of the training set (chosen by split_seed, the same for "
        "every method and train.seed), never trained on, evaluated every evaluated epoch like the test set "
        "(val_clean_acc, val_robust_acc). Taken before n_train, so n_train counts the images left; with "
        "label_noise the split gets the same rate of noisy labels as the training set (it is part of it). "
        "0 = none (the paper).",
        unit="images",
        min=0,
        max=MAX_IMAGES,
    )


@dataclass
class ModelConfig:
    """[model]: the network. Inputs are in [0, 1]; there is no normalisation layer."""

    arch: str = opt("cnn_small", "Architecture.", choices=ARCHS)
    activation: str = opt(
        "relu", "Non-linearity (softplus makes the input Hessian exact curvature).", choices=("relu", "softplus")
    )
    shortcut: str = opt(
        "common",
        "PreActResNet18 projection shortcut: 'common' takes it after bn1+ReLU (He et al.); "
        "'authors' takes it from the block input (the AdvLC reference code).",
        choices=("common", "authors"),
    )
    depth: int = opt(34, "WideResNet depth (6n + 4).", min=10, max=1000)
    width: int = opt(10, "WideResNet widening factor.", min=1, max=64)
    cnn_width: int = opt(
        1,
        "cnn_small channel multiplier: conv 32k and 64k channels, a 128k-unit hidden layer "
        "(k = 1: the 151k-parameter default).",
        min=1,
        max=64,
    )


@dataclass
class AttackConfig:
    """[attack]: the training adversary (l-inf)."""

    name: str = opt(
        "",
        "Training attack. Left empty for plain methods (fgsm, fgsm_rs, fgsm_n, pgd, standard), "
        "whose name fixes it; required for regularised methods (advlc, ...).",
        choices=("",) + ATTACKS,
    )
    eps: float = opt(8 / 255, "Perturbation budget epsilon.", unit="pixel [0,1]", min=0.0, max=1.0)
    alpha: float | None = opt(
        None,
        "Step size; default eps for single-step attacks, eps/4 for PGD.",
        unit="pixel [0,1]",
        min=0.0,
        max=1.0,
    )
    steps: int = opt(10, "PGD iterations (pgd only).", min=1, max=10000)
    random_start: bool = opt(False, "PGD random start U(-eps, eps) (pgd only; authors' code: off).")
    noise: float | None = opt(
        None,
        "FGSM-N noise magnitude k: x~ = clip(x + U(-k, k)); default eps.",
        unit="pixel [0,1]",
        min=0.0,
        max=1.0,
    )
    train_mode: bool = opt(
        True,
        "Generate training attacks with the model in train mode (BN sees adversarial batches), "
        "as the authors' code does; false = eval mode.",
    )


@dataclass
class MethodConfig:
    """[method]: the training objective, by its registered name, and its strength. A method's own
    parameters are its own table, `[method.<name>]` (e.g. `[method.kdsa] temperature = 2`), declared
    by the method's module (engine/nn/methods/)."""

    name: str = opt("standard", "Registered method (see `advlc presets` / docs/PRESETS.md).")
    lam: float = opt(0.0, "Regularisation strength lambda (alpha of Eq. 9, beta of Eq. 10).", min=0.0)
    lam_schedule: str = opt(
        "constant",
        "'constant', or 'linear': lambda ramps from 0 to `lam` over the epochs "
        "(lam * (epoch + 1) / epochs, as for TinyImageNet).",
        choices=("constant", "linear"),
    )
    tables: dict[str, Any] = field(default_factory=dict, metadata={"tables": True})
    """The `[method.<name>]` tables read so far, by method name, each an instance of that method's
    parameters class (a base preset or a sweep over method.name may hold several); `resolve`
    fills in the run's own and `params` reads it. Not an option: `option_fields` leaves it out."""

    @property
    def params(self) -> Any:
        """The run's method's parameters (None for a method without any)."""
        return self.tables.get(self.name)


@dataclass
class TrainConfig:
    """[train]: optimisation. SGD with a piecewise-constant learning rate."""

    epochs: int = opt(200, "Number of epochs.", min=1, max=MAX_EPOCHS)
    batch_size: int = opt(100, "Mini-batch size M.", unit="images", min=1, max=MAX_BATCH)
    lr: float = opt(0.1, "Initial learning rate.", min=0.0)
    lr_milestones: list[int] = opt(
        None,
        "Epochs (0-based) at which the learning rate is multiplied by lr_gamma.",
        min=0,
        max=MAX_EPOCHS,
        factory=lambda: [100, 150],
    )
    lr_gamma: float = opt(0.1, "Learning-rate decay factor at each milestone.", min=0.0, max=1.0)
    momentum: float = opt(0.9, "SGD momentum.", min=0.0, max=1.0)
    weight_decay: float = opt(1e-4, "Weight decay (all parameters).", min=0.0)
    nesterov: bool = opt(False, "Nesterov momentum.")
    select_on: str = opt(
        "test",
        "Which split's PGD robust accuracy selects best.pt, the 'best' of every table and the overfitting "
        "alert: 'test' (the paper and its reference code: test-set selection, optimistically biased) or 'val' "
        "(the held-out data.val_size images; Rice et al. 2020).",
        choices=("test", "val"),
    )
    stop_on_overfit: bool = opt(
        False,
        "Early stopping: end the run (finished, its reason recorded) once robust overfitting on the "
        "selection split has held for train.overfit_patience evaluated epochs; best.pt is the selected model.",
    )
    overfit_patience: int = opt(
        5,
        "Early stopping's patience: consecutive evaluated epochs at which the robust-overfitting condition "
        "(docs/APP.md) holds before the run stops.",
        unit="epochs",
        min=1,
        max=MAX_EPOCHS,
    )
    seed: int = opt(0, "Random seed (model init, shuffling, augmentation, attack noise).", min=0, max=SEED_MAX)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N.")
    threads: int = opt(
        0,
        "CPU threads of the run process (torch.set_num_threads). 0 = the launcher's budget: for detached CPU "
        "runs, the physical cores divided among the CPU runs running on this host (a run alone keeps torch's "
        "default); under the GPU queue, the cores divided among its slots; in the foreground, torch's default.",
        min=0,
        max=4096,
    )
    channels_last: bool = opt(
        False,
        "Fast path: keep the model's conv weights in channels_last (NHWC) memory format; "
        "same function in fp32 (outputs equal to rounding), faster convolutions on GPUs (see engine/nn/fastpath.py).",
    )
    amp: str = opt(
        "off",
        "Fast path: mixed precision. 'off' = exact fp32; 'bf16' = bfloat16 autocast of the forward "
        "passes (attacks included) on CUDA and on CPU; changes results at the bf16 rounding level.",
        choices=("off", "bf16"),
    )
    compile: bool = opt(
        False,
        "Fast path: torch.compile the model's forward (first epoch pays the compile). Ignored, with a "
        "log line, for double-backprop methods (igr, cure, gradalign, eq10_grad_penalty), which torch.compile "
        "cannot differentiate twice.",
    )


class EachOf(tuple):
    """`choices` of a list field: a list is allowed when each of its items is one of these."""

    def __contains__(self, value) -> bool:
        if isinstance(value, list):
            return all(tuple.__contains__(self, v) for v in value)
        return tuple.__contains__(self, value)


EXTRA_METRICS = (
    "train_ig",
    "train_hs",
    "train_clean_loss",
    "train_adv_loss",
    "train_av",
    "train_clean_acc",
    "train_adv_acc",
    "test_adv_loss20",
    "test_av20",
    "test_adv_acc20",
    "eff_fgsm",
    "eff_fgsm_n",
    "eff_pgd10",
    "eff_train",
    "ga",
    "whess_top",
    "whess_trace",
)
FINAL_ATTACKS = ("pgd20", "pgd50", "aa", "aa-torchattacks", "apgd50x5")
FINAL_CKPTS = ("best", "end", "swa_best", "swa_end")
EXPERIMENT_KINDS = ("fig4a", "fig4b", "fig4c", "a1")
_FIG4BC_KEYS = (
    "p",
    "lr",
    "train_loss",
    "train_adv_eff",
    "hs",
    "hs_method",
    "eff_fgsm",
    "eff_pgd10",
    "clean_loss",
    "clean_acc",
    "test_clean_acc",
    "test_robust_acc",
)
POINT_KEYS = {  # the keys of an experiment's `points` records, by kind (engine.run.experiments)
    "fig4a": ("s", "hs", "hs_method", "eff_fgsm", "eff_pgd10", "clean_loss", "clean_acc"),
    "fig4b": _FIG4BC_KEYS,
    "fig4c": _FIG4BC_KEYS,
    "a1": ("split", "steps", "adv_loss", "adv_acc", "clean_loss"),
}


@dataclass
class EvalConfig:
    """[eval]: per-epoch evaluation on the test data (the paper selects `best` on it)."""

    every: int = opt(
        1, "Evaluate every N epochs (the last epoch is always evaluated).", unit="epochs", min=1, max=MAX_EPOCHS
    )
    n: int = opt(0, "Test images used (0 = the whole test set).", unit="images", min=0, max=MAX_IMAGES)
    batch_size: int = opt(500, "Evaluation batch size.", unit="images", min=1, max=MAX_BATCH)
    eps: float | None = opt(None, "PGD budget; default attack.eps.", unit="pixel [0,1]", min=0.0, max=1.0)
    pgd_steps: int = opt(
        10, "PGD steps of the per-epoch robust accuracy (paper caption: 5; code: 10).", min=1, max=10000
    )
    pgd_alpha: float | None = opt(None, "PGD step; default eps/4.", unit="pixel [0,1]", min=0.0, max=1.0)
    ig: bool = opt(True, "Record the input-gradient norm IG.")
    hs_every: int = opt(0, "Record HS every N epochs (0 = never).", unit="epochs", min=0, max=MAX_EPOCHS)
    hs_samples: int = opt(2000, "Test images HS is averaged over (paper: 2000).", unit="images", min=1, max=MAX_IMAGES)
    hs_batch: int = opt(
        100,
        "Batch over which the input Hessian is taken (HS depends on it; paper: 100).",
        unit="images",
        min=1,
        max=MAX_BATCH,
    )
    hs_reduce: str = opt(
        "mean",
        "How HS reduces the top-20 |eigenvalues| of a batch: 'mean' (the authors' code, and the values "
        "of Table 1) or 'sum' (the paper's text: 'the l1 norm of the top 20 eigenvalues', 20x larger).",
        choices=("mean", "sum"),
    )
    # -- recordable extra metrics (engine.run.epoch_metrics; Figs 1, 3, A.2)
    extra: list[str] = opt(
        None,
        "Extra per-epoch metrics (engine.run.epoch_metrics, docs/EVALUATION.md): train_ig, train_hs, "
        "train_clean_loss, train_adv_loss, train_av, train_clean_acc, train_adv_acc (PGD-20 on the first "
        "`extra_samples` training images), test_adv_loss20, test_av20, test_adv_acc20 (PGD-20 on the "
        "evaluated test images), eff_fgsm, eff_fgsm_n, eff_pgd10, eff_train (effectiveness, Eq. 7, against "
        "PGD-50 on the first `effect_samples` training images), ga (gradient alignment, A.5), whess_top, "
        "whess_trace (weight-space Hessian, pyhessian).",
        choices=EachOf(EXTRA_METRICS),
        factory=list,
    )
    extra_every: int = opt(
        1, "Record the extra metrics every N epochs (the last epoch always).", unit="epochs", min=1, max=MAX_EPOCHS
    )
    extra_samples: int = opt(
        2000,
        "Training images (the first N) for the train_* metrics and ga (0 = all).",
        unit="images",
        min=0,
        max=MAX_IMAGES,
    )
    effect_samples: int = opt(
        2000,
        "Training images (the first N) the eff_* metrics average over (paper: 2000).",
        unit="images",
        min=1,
        max=MAX_IMAGES,
    )
    effect_train_mode: bool = opt(
        False,
        "Generate the eff_fgsm / eff_fgsm_n / eff_pgd10 perturbations in train mode (BN batch statistics, "
        "running statistics restored); eff_train always follows attack.train_mode. The losses of Eq. 7 and the "
        "PGD-50 reference are always taken in eval mode.",
    )
    whess_samples: int = opt(
        200,
        "Training images (the first N, one batch) for whess_top / whess_trace.",
        unit="images",
        min=1,
        max=MAX_IMAGES,
    )
    # -- final evaluation (engine.run.final_eval; `advlc eval`)
    final: list[str] = opt(
        None,
        "Attacks of the final evaluation run when training ends (results in the `evals` table): pgd20, "
        "pgd50, aa (original AutoAttack, pyautoattack), aa-torchattacks (torchattacks' weaker 10-step "
        "version), apgd50x5 (APGD-CE 50 steps x 5 restarts). Empty = none.",
        choices=EachOf(FINAL_ATTACKS),
        factory=list,
    )
    final_ckpts: list[str] = opt(
        None,
        "Checkpoints the final evaluation covers (swa_* are skipped when the run has none).",
        choices=EachOf(FINAL_CKPTS),
        factory=lambda: ["best", "end"],
    )
    final_n: int = opt(
        0,
        "Test images (the first N) of the final evaluation (0 = the whole test set).",
        unit="images",
        min=0,
        max=MAX_IMAGES,
    )


@dataclass
class SWAConfig:
    """[swa]: stochastic weight averaging (as used with KDSA and AdvLC in Table 1)."""

    enabled: bool = opt(False, "Keep an equal-weight running average of the weights.")
    start: int = opt(
        50, "First 0-based epoch whose end updates the average (paper: 50).", unit="epochs", min=0, max=MAX_EPOCHS
    )
    every: int = opt(
        1, "Update the average every N epochs (paper: once per epoch).", unit="epochs", min=1, max=MAX_EPOCHS
    )
    bn_batches: int = opt(
        0,
        "Clean training batches for re-estimating BN statistics after each update "
        "(0 = one full pass, as in the reference code).",
        unit="batches",
        min=0,
        max=MAX_IMAGES,
    )


@dataclass
class Fig4aParams:
    """[experiment.fig4a]: parameter noise on the checkpoint (Fig. 4a, "randomly modified models")."""

    values: list[float] = opt(None, "Noise sizes s of the grid.", min=0.0, factory=list)
    random_values: int = opt(0, "Also draw this many s ~ U(0, value_max) (the paper: s ~ U(0, 1)).", min=0, max=100_000)
    value_max: float = opt(1.0, "Upper end of the drawn noise sizes.", min=0.0)
    noise: str = opt(
        "absolute",
        "'absolute' theta + U(-s, s) (the paper's wording) or 'relative' "
        "theta * (1 + U(-s, s)), elementwise over all parameters (buffers untouched).",
        choices=("absolute", "relative"),
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {k: k for k in ("values", "random_values", "value_max", "noise")}


@dataclass
class Fig4bcParams:
    """[experiment.fig4b] / [experiment.fig4c]: one epoch of training on modified PGD perturbations
    (Fig. 4b: scaled by p; Fig. 4c: the sign of a fraction p flipped)."""

    values: list[float] = opt(
        None, "Grid of p: perturbation multipliers (fig4b) or flipped fractions (fig4c).", min=0.0, factory=list
    )
    flip_unit: str = opt(
        "sample",
        "fig4c: reverse the whole perturbation of a random fraction p of the examples ('sample'), "
        "or the sign of a random fraction p of all perturbation entries ('element').",
        choices=("sample", "element"),
    )
    pgd_steps: int = opt(20, "PGD steps of the perturbations before they are modified (paper: 20).", min=1, max=10000)
    lr: float | None = opt(
        None,
        "Learning rate of the one training epoch; default the source's learning rate at the checkpoint's epoch.",
        min=0.0,
    )
    train_eff_every: int = opt(
        1,
        "Measure the effectiveness of the modified examples on every N-th training batch (0 = never).",
        unit="batches",
        min=0,
        max=MAX_IMAGES,
    )
    train_images: int = opt(
        0,
        "Train the one epoch on the first N training images only (0 = the source's whole training set).",
        unit="images",
        min=0,
        max=MAX_IMAGES,
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {
        k: k for k in ("values", "flip_unit", "pgd_steps", "lr", "train_eff_every", "train_images")
    }


@dataclass
class A1Params:
    """[experiment.a1]: PGD loss and accuracy against the number of steps (Fig. A.1)."""

    steps: list[int] = opt(
        None,
        "PGD step counts (step eps/4, no random start).",
        min=0,
        max=100000,
        factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200],
    )
    splits: list[str] = opt(
        None,
        "Data the curves are measured on.",
        choices=EachOf(("train", "test")),
        factory=lambda: ["train", "test"],
    )
    FLAT_KEYS: ClassVar[dict[str, str]] = {"steps": "steps", "splits": "splits"}


EXPERIMENT_PARAMS: dict[str, type] = {
    "fig4a": Fig4aParams,
    "fig4b": Fig4bcParams,
    "fig4c": Fig4bcParams,
    "a1": A1Params,
}
"""Each experiment kind's own parameters, its table `[experiment.<kind>]` (the analysis modules,
engine.run.analyses, read them as `cfg.experiment.params`)."""


@dataclass
class ExperimentConfig:
    """[experiment]: a post-hoc analysis of a trained run's checkpoint (Fig. 4, A.1) instead of training.
    Each kind's own parameters are its table `[experiment.<kind>]`.

    With `kind` set, the run does not train: its process (engine.run.experiments) loads `source`'s
    checkpoint and writes one record per grid point into the `points` table of metrics.json.
    The analysed model, its data and its attack come from the source run's config.
    """

    kind: str = opt(
        "",
        "Empty for a training run; fig4a = parameter noise U(-s, s) on the checkpoint; fig4b = train one "
        "epoch on PGD-20 perturbations scaled by p; fig4c = the same with the sign of a fraction p flipped; "
        "a1 = PGD loss and accuracy against the number of steps.",
        choices=("",) + EXPERIMENT_KINDS,
    )
    source: str = opt(
        "",
        "The trained model analysed: a run id (or unique prefix), or a preset name (its most recent finished run).",
    )
    ckpt: str = opt("end", "Checkpoint of the source run.", choices=FINAL_CKPTS)
    samples: int = opt(
        2000,
        "Images (the first N of each split) HS, effectiveness and the a1 curves use (paper: 2000; 0 = all).",
        unit="images",
        min=0,
        max=MAX_IMAGES,
    )
    tables: dict[str, Any] = field(default_factory=dict, metadata={"tables": True})
    """The `[experiment.<kind>]` tables read so far, by kind (see MethodConfig.tables)."""

    @property
    def params(self) -> Any:
        """The experiment kind's own parameters (None for a training run)."""
        return self.tables.get(self.kind)


@dataclass
class RunConfig:
    """A complete, resolved description of one training run."""

    preset: PresetInfo = field(default_factory=PresetInfo)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    swa: SWAConfig = field(default_factory=SWAConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def to_dict(self) -> dict:
        """The config as config.json stores it: the run's method's parameters as the table
        `method.<name>` (no table for a method without parameters) and an experiment's as
        `experiment.<kind>`, the other methods' and kinds' left out."""
        out = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for section, name in (("method", self.method.name), ("experiment", self.experiment.kind)):
            tables = out[section].pop("tables")
            if name in tables:
                out[section][name] = tables[name]
        return out


def option_fields(cls) -> list[dataclasses.Field]:
    """A section's options: its dataclass fields without the internal `tables` of [method]."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("tables")]
