"""Where each dataset's files are expected, checked without reading them (and without torch).

The readers of engine.nn.datasets parse these files; the launchers (engine.launch) call
`check_data` first, so a missing data folder is one line before any run directory exists
instead of a failure of a detached run minutes later.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserError
from engine.sections import DataConfig

DEFAULT_ROOT = Path("~/.cache/advlc/datasets")
"""Where data.download=true puts a dataset when data.root is empty."""

CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "CIFAR-10"),
    "cifar100": ("cifar-100-python", ["train"], "test", "CIFAR-100"),
}
"""name -> (folder, training files, test file, the name of the format)."""
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
TIN_LAYOUT = (
    "tiny-imagenet-200/train/<wnid>/images/*.JPEG and tiny-imagenet-200/val/images/*.JPEG "
    "with val/val_annotations.txt, as unpacked from tiny-imagenet-200.zip"
)
BUNDLED = ("digits", "synthetic")


def data_root(cfg: DataConfig) -> Path:
    """The folder holding the dataset (`cfg`: a RunConfig's [data] section)."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    if cfg.download:
        return DEFAULT_ROOT.expanduser()
    raise UserError(
        f"{cfg.dataset}: data.root is empty; set data.root to the folder holding the dataset "
        f"(--set data.root=/path/to/datasets), or data.download=true"
    )


def missing_message(name: str, missing: Path, fmt: str, parent: str, root: Path) -> str:
    """One line naming the first missing file and how to point advlc at the data."""
    hint = f"set data.root to the folder that contains {parent}"
    if name != "tinyimagenet":
        hint += ", or data.download=true"
    return f"{name}: expected {missing} ({fmt}); {hint}"


def expected_files(name: str, root: Path) -> tuple[list[Path], str, str]:
    """(files that must exist, their format in words, the folder to name in a hint)."""
    if name in CIFAR:
        folder, train, test, label = CIFAR[name]
        return (
            [root / folder / f for f in train] + [root / folder / test],
            f"torchvision's {label} python format",
            folder,
        )
    if name == "svhn":
        return [root / f for f in SVHN_FILES], "torchvision's SVHN cropped-digits .mat format", ""
    raise ValueError(name)


def check_data(cfg: DataConfig) -> None:
    """A one-line UserError when the dataset's files are not where the config says. With
    data.download=true a missing CIFAR/SVHN is fetched by the run instead, so it passes."""
    name = cfg.dataset
    if name in BUNDLED:
        return
    root = data_root(cfg)
    if name == "tinyimagenet":
        base = root / "tiny-imagenet-200"
        if not base.is_dir() and (root / "train").is_dir():
            base = root
        for d in (base / "train", base / "val"):
            if not d.is_dir():
                raise UserError(
                    f"tinyimagenet: expected folder {d} (layout: {TIN_LAYOUT}); set data.root to the "
                    f"folder that contains tiny-imagenet-200"
                )
        return
    if name not in CIFAR and name != "svhn":
        raise UserError(
            f"data.dataset = {name!r}: unknown dataset (one of digits, cifar10, cifar100, "
            f"svhn, tinyimagenet, synthetic)"
        )
    paths, fmt, parent = expected_files(name, root)
    missing = [p for p in paths if not p.is_file()]
    if missing and not cfg.download:
        raise UserError(missing_message(name, missing[0], fmt, parent or " and ".join(p.name for p in paths), root))
