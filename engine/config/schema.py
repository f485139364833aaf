"""RunConfig: everything one training run needs, typed, documented and validated.

A preset is a TOML file whose tables mirror the sections below (`[data]`, `[model]`,
`[attack]`, `[method]`, `[train]`, `[eval]`, `[swa]`, plus `[preset]` for its description).
`--set section.key=value` overrides any field after the file is read. Derived fields
(e.g. an attack step left out) are filled in by `resolve`, so the config a run stores
is complete and explicit.

Every field declares its meaning, unit and allowed values in its metadata; the same
metadata drives validation, the error messages and `docs/PRESETS.md`.

Perturbation sizes are in [0, 1] pixel units and may be written as fractions: `eps = "8/255"`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine.errors import UserError
from engine.nn.methods import get_method, methods

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

# ---------------------------------------------------------------------------------------
# field helper
# ---------------------------------------------------------------------------------------


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
    n_train: int = opt(0, "Use only the first N training images (0 = all).", unit="images", min=0,
                       max=MAX_IMAGES)
    crop_padding: int = opt(4, "Random-crop padding for training images (0 = no crop).", unit="px", min=0, max=32)
    flip: bool = opt(True, "Random horizontal flip of training images.")
    split_seed: int = opt(0, "Seed of the fixed train/test split (digits only).", min=0, max=SEED_MAX)
    label_noise: float = opt(
        0.0, "Symmetric label noise: this fraction of the (first n_train) training labels is replaced by a "
        "different class drawn uniformly, once, from a generator seeded by split_seed (the same noisy "
        "training set for every train.seed; Dong et al. 2021). Test labels are never changed.",
        unit="fraction", min=0.0, max=1.0)
    val_size: int = opt(
        0, "Validation split: this many images held out of the training set (chosen by split_seed, the same for "
        "every method and train.seed), never trained on, evaluated every evaluated epoch like the test set "
        "(val_clean_acc, val_robust_acc). Taken before n_train, so n_train counts the images left; with "
        "label_noise the split gets the same rate of noisy labels as the training set (it is part of it). "
        "0 = none (the paper).", unit="images", min=0, max=MAX_IMAGES)


@dataclass
class ModelConfig:
    """[model]: the network. Inputs are in [0, 1]; there is no normalisation layer."""

    arch: str = opt("cnn_small", "Architecture.", choices=ARCHS)
    activation: str = opt("relu", "Non-linearity (softplus makes the input Hessian exact curvature).",
                          choices=("relu", "softplus"))
    shortcut: str = opt(
        "common",
        "PreActResNet18 projection shortcut: 'common' takes it after bn1+ReLU (He et al.); "
        "'authors' takes it from the block input (the AdvLC reference code).",
        choices=("common", "authors"),
    )
    depth: int = opt(34, "WideResNet depth (6n + 4).", min=10, max=1000)
    width: int = opt(10, "WideResNet widening factor.", min=1, max=64)
    cnn_width: int = opt(1, "cnn_small channel multiplier: conv 32k and 64k channels, a 128k-unit hidden layer "
                         "(k = 1: the 151k-parameter default).", min=1, max=64)


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
        None, "Step size; default eps for single-step attacks, eps/4 for PGD.", unit="pixel [0,1]",
        min=0.0, max=1.0,
    )
    steps: int = opt(10, "PGD iterations (pgd only).", min=1, max=10000)
    random_start: bool = opt(False, "PGD random start U(-eps, eps) (pgd only; authors' code: off).")
    noise: float | None = opt(
        None, "FGSM-N noise magnitude k: x~ = clip(x + U(-k, k)); default eps.", unit="pixel [0,1]",
        min=0.0, max=1.0,
    )
    train_mode: bool = opt(
        True, "Generate training attacks with the model in train mode (BN sees adversarial batches), "
        "as the authors' code does; false = eval mode.",
    )


@dataclass
class MethodConfig:
    """[method]: the training objective, by its registered name, and its strength."""

    name: str = opt("standard", "Registered method (see `advlc presets` / docs/PRESETS.md).")
    lam: float = opt(0.0, "Regularisation strength lambda (alpha of Eq. 9, beta of Eq. 10).", min=0.0)
    lam_schedule: str = opt(
        "constant", "'constant', or 'linear': lambda ramps from 0 to `lam` over the epochs "
        "(lam * (epoch + 1) / epochs, as for TinyImageNet).",
        choices=("constant", "linear"),
    )
    top_n: int = opt(100, "AdvLC: N, the number of logit differences in the batch that are penalised (Eq. 15).",
                     unit="entries", min=1, max=MAX_IMAGES)
    clean: str = opt(
        "start",
        "AdvLC clean logits: 'start' shares the attack's first forward pass (f(x) for FGSM/PGD, "
        "f(x~) for FGSM-N, as in the authors' code); 'x' adds a separate forward pass on x.",
        choices=("start", "x"),
    )
    temperature: float = opt(
        1.0, "Consistency: softmax temperature tau of the JS term, softmax(logits / tau) "
        "(the paper: 1; Tack et al. 2022: 0.5).", min=0.01, max=100.0)
    kd_temperature: float = opt(
        2.0, "KDSA: distillation temperature T (Chen et al. 2021 code: 2); the KD terms are scaled by T^2.",
        min=1e-6, max=1000.0)
    kd_alpha_std: float = opt(
        0.1, "KDSA: weight of the KD term towards the standard-trained teacher (original code: coef_kd1 = 0.1). "
        "The CE weight is 1 - kd_alpha_std - kd_alpha_adv (original: 0.3).", min=0.0, max=1.0)
    kd_alpha_adv: float = opt(
        0.6, "KDSA: weight of the KD term towards the adversarially-trained teacher (original code: "
        "coef_kd2 = 0.6).", min=0.0, max=1.0)
    kd_std_checkpoint: str = opt(
        "end", "KDSA: which checkpoint of the standard teacher run: 'end' (the last epoch; the original "
        "uses the best-clean-accuracy model, which for standard training is ~ the end) or 'best' "
        "(highest PGD robust accuracy).", choices=("end", "best"))
    kd_adv_checkpoint: str = opt(
        "best", "KDSA: which checkpoint of the adversarial teacher run: 'best' (highest PGD robust "
        "accuracy, the original's early-stopped RA-best teacher) or 'end'.", choices=("best", "end"))
    cure_form: str = opt(
        "batch_sq", "CURE's penalty: 'batch_sq' = the squared l2 norm of the difference of the batch-mean-CE "
        "input gradients, model in train mode (the form under which the paper's lambda = 1500 is on the scale of "
        "the CE); 'original' = the public CURE code's mean over samples of the unsquared per-sample norms, "
        "model in eval mode.", choices=("batch_sq", "original"))


@dataclass
class TrainConfig:
    """[train]: optimisation. SGD with a piecewise-constant learning rate."""

    epochs: int = opt(200, "Number of epochs.", min=1, max=MAX_EPOCHS)
    batch_size: int = opt(100, "Mini-batch size M.", unit="images", min=1, max=MAX_BATCH)
    lr: float = opt(0.1, "Initial learning rate.", min=0.0)
    lr_milestones: list[int] = opt(None, "Epochs (0-based) at which the learning rate is multiplied by lr_gamma.",
                                   min=0, max=MAX_EPOCHS, factory=lambda: [100, 150])
    lr_gamma: float = opt(0.1, "Learning-rate decay factor at each milestone.", min=0.0, max=1.0)
    momentum: float = opt(0.9, "SGD momentum.", min=0.0, max=1.0)
    weight_decay: float = opt(1e-4, "Weight decay (all parameters).", min=0.0)
    nesterov: bool = opt(False, "Nesterov momentum.")
    select_on: str = opt(
        "test", "Which split's PGD robust accuracy selects best.pt, the 'best' of every table and the overfitting "
        "alert: 'test' (the paper and its reference code: test-set selection, optimistically biased) or 'val' "
        "(the held-out data.val_size images; Rice et al. 2020).", choices=("test", "val"))
    stop_on_overfit: bool = opt(
        False, "Early stopping: end the run (finished, its reason recorded) once robust overfitting on the "
        "selection split has held for train.overfit_patience evaluated epochs; best.pt is the selected model.")
    overfit_patience: int = opt(
        5, "Early stopping's patience: consecutive evaluated epochs at which the robust-overfitting condition "
        "(docs/APP.md) holds before the run stops.", unit="epochs", min=1, max=MAX_EPOCHS)
    seed: int = opt(0, "Random seed (model init, shuffling, augmentation, attack noise).", min=0, max=SEED_MAX)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N.")
    threads: int = opt(
        0, "CPU threads of the run process (torch.set_num_threads). 0 = the launcher's budget: for detached CPU "
        "runs, the physical cores divided among the CPU runs running on this host (a run alone keeps torch's "
        "default); under the GPU queue, the cores divided among its slots; in the foreground, torch's default.",
        min=0, max=4096)
    channels_last: bool = opt(
        False, "Fast path: keep the model's conv weights in channels_last (NHWC) memory format; "
        "same function in fp32 (outputs equal to rounding), faster convolutions on GPUs (see engine/nn/fastpath.py).")
    amp: str = opt(
        "off", "Fast path: mixed precision. 'off' = exact fp32; 'bf16' = bfloat16 autocast of the forward "
        "passes (attacks included) on CUDA and on CPU; changes results at the bf16 rounding level.",
        choices=("off", "bf16"))
    compile: bool = opt(
        False, "Fast path: torch.compile the model's forward (first epoch pays the compile). Ignored, with a "
        "log line, for double-backprop methods (igr, cure, gradalign, eq10_grad_penalty), which torch.compile "
        "cannot differentiate twice.")


class _EachOf(tuple):
    """`choices` of a list field: a list is allowed when each of its items is one of these."""

    def __contains__(self, value) -> bool:
        if isinstance(value, list):
            return all(tuple.__contains__(self, v) for v in value)
        return tuple.__contains__(self, value)


EXTRA_METRICS = ("train_ig", "train_hs", "train_clean_loss", "train_adv_loss", "train_av", "train_clean_acc",
                 "train_adv_acc", "test_adv_loss20", "test_av20", "test_adv_acc20", "eff_fgsm", "eff_fgsm_n",
                 "eff_pgd10", "eff_train", "ga", "whess_top", "whess_trace")
FINAL_ATTACKS = ("pgd20", "pgd50", "aa", "aa-torchattacks", "apgd50x5")
FINAL_CKPTS = ("best", "end", "swa_best", "swa_end")
EXPERIMENT_KINDS = ("fig4a", "fig4b", "fig4c", "a1")
POINT_KEYS = {  # the keys of an experiment's `points` records, by kind (engine.run.experiments)
    "fig4a": ("s", "hs", "hs_method", "eff_fgsm", "eff_pgd10", "clean_loss", "clean_acc"),
    "fig4b": ("p", "lr", "train_loss", "train_adv_eff", "hs", "hs_method", "eff_fgsm", "eff_pgd10",
              "clean_loss", "clean_acc", "test_clean_acc", "test_robust_acc"),
    "fig4c": ("p", "lr", "train_loss", "train_adv_eff", "hs", "hs_method", "eff_fgsm", "eff_pgd10",
              "clean_loss", "clean_acc", "test_clean_acc", "test_robust_acc"),
    "a1": ("split", "steps", "adv_loss", "adv_acc", "clean_loss"),
}


@dataclass
class EvalConfig:
    """[eval]: per-epoch evaluation on the test data (the paper selects `best` on it)."""

    every: int = opt(1, "Evaluate every N epochs (the last epoch is always evaluated).", unit="epochs", min=1,
                     max=MAX_EPOCHS)
    n: int = opt(0, "Test images used (0 = the whole test set).", unit="images", min=0, max=MAX_IMAGES)
    batch_size: int = opt(500, "Evaluation batch size.", unit="images", min=1, max=MAX_BATCH)
    eps: float | None = opt(None, "PGD budget; default attack.eps.", unit="pixel [0,1]", min=0.0, max=1.0)
    pgd_steps: int = opt(10, "PGD steps of the per-epoch robust accuracy (paper caption: 5; code: 10).",
                         min=1, max=10000)
    pgd_alpha: float | None = opt(None, "PGD step; default eps/4.", unit="pixel [0,1]", min=0.0, max=1.0)
    ig: bool = opt(True, "Record the input-gradient norm IG.")
    hs_every: int = opt(0, "Record HS every N epochs (0 = never).", unit="epochs", min=0, max=MAX_EPOCHS)
    hs_samples: int = opt(2000, "Test images HS is averaged over (paper: 2000).", unit="images", min=1,
                          max=MAX_IMAGES)
    hs_batch: int = opt(100, "Batch over which the input Hessian is taken (HS depends on it; paper: 100).",
                        unit="images", min=1, max=MAX_BATCH)
    hs_reduce: str = opt(
        "mean", "How HS reduces the top-20 |eigenvalues| of a batch: 'mean' (the authors' code, and the values "
        "of Table 1) or 'sum' (the paper's text: 'the l1 norm of the top 20 eigenvalues', 20x larger).",
        choices=("mean", "sum"))
    # -- recordable extra metrics (engine.run.epoch_metrics; Figs 1, 3, A.2)
    extra: list[str] = opt(
        None, "Extra per-epoch metrics (engine.run.epoch_metrics, docs/EVALUATION.md): train_ig, train_hs, "
        "train_clean_loss, train_adv_loss, train_av, train_clean_acc, train_adv_acc (PGD-20 on the first "
        "`extra_samples` training images), test_adv_loss20, test_av20, test_adv_acc20 (PGD-20 on the "
        "evaluated test images), eff_fgsm, eff_fgsm_n, eff_pgd10, eff_train (effectiveness, Eq. 7, against "
        "PGD-50 on the first `effect_samples` training images), ga (gradient alignment, A.5), whess_top, "
        "whess_trace (weight-space Hessian, pyhessian).", choices=_EachOf(EXTRA_METRICS), factory=list)
    extra_every: int = opt(1, "Record the extra metrics every N epochs (the last epoch always).", unit="epochs", min=1,
                           max=MAX_EPOCHS)
    extra_samples: int = opt(2000, "Training images (the first N) for the train_* metrics and ga (0 = all).",
                             unit="images", min=0, max=MAX_IMAGES)
    effect_samples: int = opt(2000, "Training images (the first N) the eff_* metrics average over (paper: 2000).",
                              unit="images", min=1, max=MAX_IMAGES)
    effect_train_mode: bool = opt(
        False, "Generate the eff_fgsm / eff_fgsm_n / eff_pgd10 perturbations in train mode (BN batch statistics, "
        "running statistics restored); eff_train always follows attack.train_mode. The losses of Eq. 7 and the "
        "PGD-50 reference are always taken in eval mode.")
    whess_samples: int = opt(200, "Training images (the first N, one batch) for whess_top / whess_trace.",
                             unit="images", min=1, max=MAX_IMAGES)
    # -- final evaluation (engine.run.final_eval; `advlc eval`)
    final: list[str] = opt(
        None, "Attacks of the final evaluation run when training ends (results in the `evals` table): pgd20, "
        "pgd50, aa (original AutoAttack, pyautoattack), aa-torchattacks (torchattacks' weaker 10-step "
        "version), apgd50x5 (APGD-CE 50 steps x 5 restarts). Empty = none.",
        choices=_EachOf(FINAL_ATTACKS), factory=list)
    final_ckpts: list[str] = opt(
        None, "Checkpoints the final evaluation covers (swa_* are skipped when the run has none).",
        choices=_EachOf(FINAL_CKPTS), factory=lambda: ["best", "end"])
    final_n: int = opt(0, "Test images (the first N) of the final evaluation (0 = the whole test set).",
                       unit="images", min=0, max=MAX_IMAGES)


@dataclass
class SWAConfig:
    """[swa]: stochastic weight averaging (as used with KDSA and AdvLC in Table 1)."""

    enabled: bool = opt(False, "Keep an equal-weight running average of the weights.")
    start: int = opt(50, "First 0-based epoch whose end updates the average (paper: 50).", unit="epochs", min=0,
                     max=MAX_EPOCHS)
    every: int = opt(1, "Update the average every N epochs (paper: once per epoch).", unit="epochs", min=1,
                     max=MAX_EPOCHS)
    bn_batches: int = opt(0, "Clean training batches for re-estimating BN statistics after each update "
                          "(0 = one full pass, as in the reference code).", unit="batches", min=0, max=MAX_IMAGES)


@dataclass
class ExperimentConfig:
    """[experiment]: a post-hoc analysis of a trained run's checkpoint (Fig. 4, A.1) instead of training.

    With `kind` set, the run does not train: its process (engine.run.experiments) loads `source`'s
    checkpoint and writes one record per grid point into the `points` table of metrics.json.
    The analysed model, its data and its attack come from the source run's config.
    """

    kind: str = opt(
        "", "Empty for a training run; fig4a = parameter noise U(-s, s) on the checkpoint; fig4b = train one "
        "epoch on PGD-20 perturbations scaled by p; fig4c = the same with the sign of a fraction p flipped; "
        "a1 = PGD loss and accuracy against the number of steps.", choices=("",) + EXPERIMENT_KINDS)
    source: str = opt("", "The trained model analysed: a run id (or unique prefix), or a preset name "
                      "(its most recent finished run).")
    ckpt: str = opt("end", "Checkpoint of the source run.", choices=FINAL_CKPTS)
    values: list[float] = opt(
        None, "Grid: fig4a noise sizes s; fig4b perturbation multipliers p; fig4c flipped fractions p.",
        min=0.0, factory=list)
    random_values: int = opt(0, "fig4a: also draw this many s ~ U(0, value_max) (the paper: s ~ U(0, 1)).", min=0,
                             max=100_000)
    value_max: float = opt(1.0, "fig4a: upper end of the drawn noise sizes.", min=0.0)
    noise: str = opt(
        "absolute", "fig4a: 'absolute' theta + U(-s, s) (the paper's wording) or 'relative' "
        "theta * (1 + U(-s, s)), elementwise over all parameters (buffers untouched).",
        choices=("absolute", "relative"))
    flip_unit: str = opt(
        "sample", "fig4c: reverse the whole perturbation of a random fraction p of the examples ('sample'), "
        "or the sign of a random fraction p of all perturbation entries ('element').",
        choices=("sample", "element"))
    pgd_steps: int = opt(20, "fig4b/c: PGD steps of the perturbations before they are modified (paper: 20).",
                         min=1, max=10000)
    lr: float | None = opt(None, "fig4b/c: learning rate of the one training epoch; default the source's "
                           "learning rate at the checkpoint's epoch.", min=0.0)
    train_eff_every: int = opt(1, "fig4b/c: measure the effectiveness of the modified examples on every N-th "
                               "training batch (0 = never).", unit="batches", min=0,
                               max=MAX_IMAGES)
    train_images: int = opt(0, "fig4b/c: train the one epoch on the first N training images only (0 = the "
                            "source's whole training set).", unit="images", min=0,
                            max=MAX_IMAGES)
    samples: int = opt(2000, "Images (the first N of each split) HS, effectiveness and the a1 curves use "
                       "(paper: 2000; 0 = all).", unit="images", min=0,
                       max=MAX_IMAGES)
    steps: list[int] = opt(None, "a1: PGD step counts (step eps/4, no random start).", min=0, max=100000,
                           factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200])
    splits: list[str] = opt(None, "a1: data the curves are measured on.", choices=_EachOf(("train", "test")),
                            factory=lambda: ["train", "test"])


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

    # -- convenience -------------------------------------------------------------------
    @property
    def label(self) -> str:
        """Short human name of the training scheme, e.g. 'fgsm_n+advlc' or 'pgd'."""
        m = get_method(self.method.name)
        if m.fixed_attack is not None:
            return self.method.name
        return f"{self.attack.name}+{self.method.name}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig)}


def field_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ---------------------------------------------------------------------------------------
# value coercion: TOML / override text -> field type
# ---------------------------------------------------------------------------------------

_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _describe(args[0])
    if origin is list:
        return "a list of " + _describe(typing.get_args(tp)[0]) + "s"
    return {int: "an integer", float: "a number (e.g. 0.03 or \"8/255\")", bool: "true or false",
            str: "a string"}.get(tp, str(tp))


def coerce(value: Any, tp) -> Any:
    """Convert `value` to type `tp`; raise ValueError with what was expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0])
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                text = text[1:-1] if text.endswith("]") else text
            value = [v for v in (p.strip() for p in text.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(_describe(tp))
        return [coerce(v, inner) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
            return False
        raise ValueError(_describe(tp))
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(_describe(tp))
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(_describe(tp))
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(_describe(tp))
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            m = _FRACTION.match(value)
            try:
                out = float(m.group(1)) / float(m.group(2)) if m else float(value)
            except (ValueError, ZeroDivisionError):
                raise ValueError(_describe(tp)) from None
        else:
            raise ValueError(_describe(tp))
        if not math.isfinite(out):
            raise ValueError("a finite number")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(_describe(tp))
    raise ValueError(f"unsupported type {tp}")


def _allowed(meta: Mapping) -> str | None:
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"] if c != "") + \
            (" (or empty)" if "" in meta["choices"] else "")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f"between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f">= {_num(lo)}"
    if hi is not None:
        return f"<= {_num(hi)}"
    return None


def _num(v) -> str:
    """A bound as `allowed` says it: an integer in full (4294967295), a float in %g."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def _check_range(value, meta) -> str | None:
    """Return what is allowed when `value` violates the field's metadata, else None."""
    if value is None:
        return None
    choices = meta.get("choices")
    if choices and value not in choices:
        return _allowed(meta)
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if meta.get("min") is not None and v < meta["min"]:
                return _allowed(meta)
            if meta.get("max") is not None and v > meta["max"]:
                return _allowed(meta)
    return None


def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


# ---------------------------------------------------------------------------------------
# building a RunConfig from a dict (TOML) and overrides
# ---------------------------------------------------------------------------------------

# Top-level TOML tables that are not RunConfig sections but are understood by the
# preset layer (sweeps, experiment definitions, dependencies).
EXTRA_TABLES = ("sweep", "teachers", "slurm")


def _set_field(section_obj, section: str, key: str, raw, where: str):
    hints = field_hints(type(section_obj))
    fields = {f.name: f for f in dataclasses.fields(section_obj)}
    if key not in fields:
        allowed = ", ".join(fields)
        raise UserError(f"{where}: unknown key '{section}.{key}' (keys of [{section}]: {allowed})")
    meta = fields[key].metadata
    try:
        value = coerce(raw, hints[key])
    except ValueError as exc:
        raise UserError(f"{where}: {section}.{key} = {_fmt(raw)}: must be {exc}") from None
    bad = _check_range(value, meta)
    if bad:
        raise UserError(f"{where}: {section}.{key} = {_fmt(value)}: must be {bad}")
    setattr(section_obj, key, value)


def from_dict(data: dict, where: str) -> RunConfig:
    """Build a RunConfig from a preset's tables; `where` names the file in errors."""
    cfg = RunConfig()
    classes = section_classes()
    for section, table in data.items():
        if section in EXTRA_TABLES:
            continue
        if section not in classes:
            allowed = ", ".join(f"[{s}]" for s in list(classes) + list(EXTRA_TABLES))
            raise UserError(f"{where}: unknown table [{section}] (allowed: {allowed})")
        if not isinstance(table, dict):
            raise UserError(f"{where}: '{section}' must be a table [{section}]")
        obj = getattr(cfg, section)
        for key, raw in table.items():
            _set_field(obj, section, key, raw, where)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """'attack.eps=8/255' -> ('attack', 'eps', value-as-parsed-by-TOML-or-string)."""
    if "=" not in text:
        raise UserError(f"--set {text}: expected section.key=value (e.g. --set train.epochs=5)")
    path, _, raw = text.partition("=")
    path = path.strip()
    if path.count(".") != 1:
        raise UserError(f"--set {text}: key must be section.key (e.g. attack.eps), got '{path}'")
    section, key = path.split(".")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except (RecursionError, MemoryError, ValueError, TypeError):   # e.g. [[[[... thousands deep
        raise UserError(f"--set {path}=…: the value cannot be read (nested too deeply or too large)") from None
    if _too_deep(value, MAX_TOML_DEPTH):
        raise UserError(f"--set {path}=…: the value is nested more than {MAX_TOML_DEPTH} deep")
    return section, key, value


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    classes = section_classes()
    for text in overrides or []:
        section, key, value = parse_override(text)
        if section not in classes:
            raise UserError(f"--set {text}: unknown section '{section}' (sections: {', '.join(classes)})")
        if field_hints(classes[section]).get(key) is str and not isinstance(value, str):
            value = text.partition("=")[2].strip()   # a string field takes the text as written (run id 1234)
        _set_field(getattr(cfg, section), section, key, value, f"--set {text}")
    return cfg


def resolve(cfg: RunConfig, where: str) -> RunConfig:
    """Fill in derived values and check cross-field rules; errors name `where`."""
    if cfg.method.name not in methods():
        raise UserError(f"{where}: method.name = {cfg.method.name!r}: must be one of {', '.join(sorted(methods()))}")
    method = get_method(cfg.method.name)
    a = cfg.attack
    if method.fixed_attack is not None:
        if a.name not in ("", method.fixed_attack):
            raise UserError(
                f"{where}: attack.name = {a.name!r}: method '{cfg.method.name}' trains with "
                f"'{method.fixed_attack}' (leave attack.name empty, or pick a regularised method)")
        a.name = method.fixed_attack
    else:
        if a.name == "":
            allowed = ", ".join(repr(x) for x in method.attacks)
            raise UserError(f"{where}: attack.name is empty: method '{cfg.method.name}' needs a training attack, "
                            f"one of {allowed}")
        if a.name not in method.attacks:
            allowed = ", ".join(repr(x) for x in method.attacks)
            raise UserError(f"{where}: attack.name = {a.name!r}: method '{cfg.method.name}' combines with {allowed}")
    if a.alpha is None:
        a.alpha = a.eps / 4 if a.name == "pgd" else a.eps
    if a.noise is None:
        a.noise = a.eps
    e = cfg.eval
    if e.eps is None:
        e.eps = a.eps  # the threat model: standard training is evaluated at the same eps
    if e.pgd_alpha is None:
        e.pgd_alpha = e.eps / 4
    if cfg.train.select_on == "val" and cfg.data.val_size == 0:
        raise UserError(f"{where}: train.select_on = \"val\" needs a validation split: set data.val_size "
                        f"(images held out of the training set, e.g. data.val_size=200)")
    ms = cfg.train.lr_milestones
    if any(m < 0 for m in ms) or ms != sorted(ms):
        raise UserError(f"{where}: train.lr_milestones = {ms}: must be increasing epochs >= 0")
    if not DEVICES_RE.match(cfg.train.device):
        raise UserError(f"{where}: train.device = {cfg.train.device!r}: must be auto, cpu, cuda or cuda:N")
    method.validate(cfg, where)
    m = cfg.method
    if m.kd_alpha_std + m.kd_alpha_adv > 1.0 + 1e-12:
        raise UserError(f"{where}: method.kd_alpha_std + method.kd_alpha_adv = {m.kd_alpha_std + m.kd_alpha_adv:g}: "
                        f"must be <= 1 (the CE weight is 1 - their sum; original: 0.1 + 0.6)")
    return cfg


def build(data: dict, where: str, overrides: list[str] | None = None) -> RunConfig:
    cfg = from_dict(data, where)
    apply_overrides(cfg, overrides or [])
    return resolve(cfg, where if not overrides else f"{where} (with --set)")


def from_json(d: dict) -> RunConfig:
    """Rebuild a stored (already resolved) config, e.g. from a run's config.json."""
    cfg = RunConfig()
    classes = section_classes()
    for section, table in d.items():
        if section not in classes:
            continue
        obj = getattr(cfg, section)
        names = {f.name for f in dataclasses.fields(obj)}
        for key, value in table.items():
            if key in names:
                setattr(obj, key, value)
    return cfg


MAX_TOML_BYTES = 1 << 20
"""The largest preset file (1 MiB; the built-in ones are under 2 KiB)."""
MAX_TOML_DEPTH = 16
"""How deeply a preset's tables, arrays and inline tables may nest (the built-in ones: 3)."""


def _too_deep(value, limit: int) -> bool:
    """Whether lists and dicts nest more than `limit` deep in `value` (a scalar: 0), without recursion."""
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, (list, tuple)):
            if d + 1 > limit:
                return True
            stack.extend((x, d + 1) for x in v)
    return False


def load_toml(path: Path) -> dict:
    """A preset file's tables; every way it can fail to be read or parsed is one UserError line
    naming the file (the parser's own RecursionError on [[[[... included)."""
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        raise UserError(f"{path}: no such preset file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if size > MAX_TOML_BYTES:
        raise UserError(f"{path}: {size} bytes, larger than the {MAX_TOML_BYTES} a preset file may have")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such preset file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); presets are TOML files in UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path}: invalid TOML: arrays or tables nested too deeply for the parser "
                        f"(at most {MAX_TOML_DEPTH} levels)") from None
    except Exception as exc:  # noqa: BLE001 - any other parser failure is still one line naming the file
        raise UserError(f"{path}: cannot be parsed as TOML ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:120]})") from None
    if _too_deep(data, MAX_TOML_DEPTH + 1):   # + 1: the file's own top-level table
        raise UserError(f"{path}: values nested more than {MAX_TOML_DEPTH} deep (tables, arrays, inline tables)")
    return data


def schema() -> list[dict]:
    """Every field of every section, for docs and the app."""
    out = []
    defaults = RunConfig()
    for section, cls in section_classes().items():
        hints = field_hints(cls)
        for f in dataclasses.fields(cls):
            m = f.metadata
            out.append({
                "key": f"{section}.{f.name}",
                "type": _describe(hints[f.name]),
                "default": getattr(getattr(defaults, section), f.name),
                "unit": m.get("unit", ""),
                "allowed": _allowed(m) or "",
                "doc": m.get("doc", ""),
                "section_doc": (cls.__doc__ or "").strip(),
            })
    return out
