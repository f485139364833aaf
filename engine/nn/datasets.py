"""Datasets as tensors on the run's device, and on-device augmentation.

A whole dataset fits in GPU memory (CIFAR-10 train is 150 MB as uint8, TinyImageNet
1.2 GB), so it is loaded once, kept on the device as uint8 NCHW, and every batch is
an index into it: no DataLoader workers, no host-to-device copies per step. Crop and
flip run on the whole batch with tensor ops (see `augment`).

Readers parse torchvision's on-disk formats directly instead of going through
`torchvision.datasets`, so that (a) a malformed or missing file becomes one clear
`UserError` line naming the file, and (b) small fake folders in tests load without
md5 checks. torchvision is only used to *download* (`data.download = true`).

Conventions: image datasets are uint8 in 0..255; `digits` and `synthetic` are float32
in [0, 1]; `as_float` turns either into float32 in [0, 1]; labels are int64.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.nn.dataset_files import (
    TIN_LAYOUT,
    data_root,
    expected_files,
    missing_message,
)
from engine.sections import DataConfig

# ---------------------------------------------------------------------------------------
# the dataset container
# ---------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Train and test tensors of one dataset, all on one device."""

    name: str
    train_x: torch.Tensor  # (N, C, H, W) uint8 0..255, or float32 in [0, 1] (digits, synthetic)
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    val_x: torch.Tensor | None = None  # data.val_size images held out of the training set (None: no split)
    val_y: torch.Tensor | None = None

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    def to(self, device) -> "Dataset":
        """A copy with every tensor on `device` (no copy where already there)."""
        return Dataset(
            name=self.name,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
            num_classes=self.num_classes,
            val_x=None if self.val_x is None else self.val_x.to(device),
            val_y=None if self.val_y is None else self.val_y.to(device),
        )


# ---------------------------------------------------------------------------------------
# batch helpers
# ---------------------------------------------------------------------------------------


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (as torchvision's ToTensor); float input is returned as is."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return x
    return x.to(torch.float32)


def augment(x: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Per-sample random crop (zero padding `padding`) and horizontal flip (p = 0.5).

    Equivalent in distribution to torchvision's `RandomCrop(H, padding=p)` (fill 0)
    followed by `RandomHorizontalFlip()`, but done for the whole batch at once on x's
    device: pad once, then one gather whose row/column indices carry each sample's
    offset, with the column index reversed for flipped samples. All randomness comes
    from `generator` (on x's device; None = the global RNG), offsets drawn first.
    Returns a new tensor of x's dtype, or x itself when there is nothing to do.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0 and not flip:
        return x
    b, c, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding), mode="constant", value=0)
        oy = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
        rows = rows + oy
        cols = cols + ox
    if flip:
        flipped = torch.rand((b, 1), device=dev, generator=generator) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    return x[bi, ci, rows.reshape(b, 1, h, 1), cols.reshape(b, 1, 1, w)]


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator | None, device, drop_last: bool = True
) -> list[torch.Tensor]:
    """One epoch of shuffled index batches over range(n), drawn on `device` from `generator`.

    With drop_last the final partial batch is dropped (so every step sees `batch_size`
    samples and BatchNorm statistics are comparable); n < batch_size then gives no batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    perm = torch.randperm(n, generator=generator, device=device)
    batches = list(perm.split(batch_size))
    if drop_last and batches and batches[-1].numel() < batch_size:
        batches.pop()
    return batches


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu") -> Dataset:
    """Read `cfg.dataset` (`cfg`: a RunConfig's [data] section) into tensors on `device`; any
    problem with the files is a UserError."""
    name = cfg.dataset
    if name == "digits":
        ds = _load_digits(cfg.split_seed)
    elif name == "synthetic":
        ds = _load_synthetic(cfg.split_seed, cfg.n_train or 1000, 500)
    elif name in ("cifar10", "cifar100", "svhn", "tinyimagenet"):
        root = data_root(cfg)
        loader = {
            "cifar10": _load_cifar10,
            "cifar100": _load_cifar100,
            "svhn": _load_svhn,
            "tinyimagenet": _load_tinyimagenet,
        }[name]
        ds = loader(root, cfg.download)
    else:
        raise UserError(
            f"data.dataset = {name!r}: unknown dataset (one of digits, cifar10, cifar100, "
            f"svhn, tinyimagenet, synthetic)"
        )
    if cfg.val_size > 0:
        hold_out(ds, cfg.val_size, cfg.split_seed)
    if cfg.n_train > 0:
        ds.train_x = ds.train_x[: cfg.n_train]
        ds.train_y = ds.train_y[: cfg.n_train]
    if cfg.label_noise > 0:
        ds.train_y = symmetric_label_noise(ds.train_y, cfg.label_noise, ds.num_classes, cfg.split_seed)
        if ds.val_y is not None:  # the split has the training set's label quality (it is part of it)
            ds.val_y = symmetric_label_noise(ds.val_y, cfg.label_noise, ds.num_classes, cfg.split_seed + VAL_NOISE_SEED)
    ds.train_x = ds.train_x.contiguous()
    ds.test_x = ds.test_x.contiguous()
    return ds.to(device)


VAL_NOISE_SEED = 7919
"""Added to split_seed for the validation split's label noise: a stream of its own, drawn the same way
as the training labels' (which are drawn exactly as without a split)."""


def hold_out(ds: Dataset, n: int, seed: int) -> None:
    """Move `n` training images, chosen by a CPU generator seeded with `seed` (the same split for every
    method and train.seed), into ds.val_x/val_y; the rest stay training images in their order."""
    total = len(ds.train_x)
    if n >= total:
        raise UserError(
            f"data.val_size = {n}: must be less than the {total} training images of {ds.name} "
            f"(some must be left to train on)"
        )
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    keep = torch.ones(total, dtype=torch.bool)
    keep[chosen] = False
    val = chosen.sort().values
    ds.val_x, ds.val_y = ds.train_x[val], ds.train_y[val]
    ds.train_x, ds.train_y = ds.train_x[keep], ds.train_y[keep]


def symmetric_label_noise(y: torch.Tensor, frac: float, num_classes: int, seed: int) -> torch.Tensor:
    """A copy of labels `y` with round(frac * N) of them, chosen at random, each replaced by one of
    the other num_classes - 1 classes, uniformly. Drawn on the CPU from a generator seeded by
    `seed`, so a seed names the same noisy labels on every machine."""
    n = len(y)
    k = int(round(frac * n))
    if k == 0 or num_classes < 2:
        return y.clone()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:k]
    shift = torch.randint(1, num_classes, (k,), generator=g)
    out = y.clone().cpu()
    out[idx] = (out[idx] + shift) % num_classes
    return out.to(y.device)


def _require(name: str, root: Path, download: bool) -> list[Path]:
    """The dataset's files (engine.nn.dataset_files); one UserError line naming the first one
    missing, after downloading when asked."""
    paths, fmt, parent = expected_files(name, root)
    missing = [p for p in paths if not p.is_file()]
    if missing and download:
        _download(name, root)
        missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(missing_message(name, missing[0], fmt, parent or " and ".join(p.name for p in paths), root))
    return paths


def _download(name: str, root: Path) -> None:
    """Let torchvision fetch the archive into `root`; our own readers parse it afterwards."""
    import torchvision.datasets as tvd

    try:
        root.mkdir(parents=True, exist_ok=True)
        if name == "cifar10":
            tvd.CIFAR10(str(root), train=True, download=True)
            tvd.CIFAR10(str(root), train=False, download=True)
        elif name == "cifar100":
            tvd.CIFAR100(str(root), train=True, download=True)
            tvd.CIFAR100(str(root), train=False, download=True)
        elif name == "svhn":
            tvd.SVHN(str(root), split="train", download=True)
            tvd.SVHN(str(root), split="test", download=True)
    except Exception as exc:  # network, disk, checksum: all reported as one line
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(
            f"{name}: download into {root} failed ({msg}); download it by hand and set data.root to its folder"
        ) from None


# -- digits / synthetic --------------------------------------------------------------


def _load_digits(seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits with a fixed, seeded, stratified 80/20 split.

    The split uses numpy's legacy RandomState, whose stream numpy guarantees stable,
    so a seed names the same split on every machine and version.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.asarray(d.data, dtype=np.float64).reshape(-1, 1, 8, 8) / 16.0
    y = np.asarray(d.target, dtype=np.int64)
    train_idx, test_idx = _stratified_split(y, 0.2, seed)
    return Dataset(
        name="digits",
        train_x=torch.from_numpy(x[train_idx].astype(np.float32)),
        train_y=torch.from_numpy(y[train_idx]),
        test_x=torch.from_numpy(x[test_idx].astype(np.float32)),
        test_y=torch.from_numpy(y[test_idx]),
        num_classes=10,
    )


def _stratified_split(y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each class split in proportion; round(test_frac * N) test items in all."""
    rng = np.random.RandomState(seed)
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes])
    want = test_frac * counts
    n_test = np.floor(want).astype(int)
    short = int(round(test_frac * len(y))) - int(n_test.sum())
    if short > 0:  # largest remainders get one more (ties: lower class first)
        order = np.argsort(-(want - n_test), kind="stable")
        n_test[order[:short]] += 1
    train, test = [], []
    for c, k in zip(classes, n_test):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:k])
        train.append(idx[k:])
    train = np.concatenate(train)
    test = np.concatenate(test)
    # shuffle so that "the first n training images" is a random, roughly balanced subset
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def _load_synthetic(seed: int, n_train: int, n_test: int) -> Dataset:
    """CIFAR-shaped random data for benchmarks and smoke tests.

    Each class has a fixed random template and an image is an even mix of its template
    and uniform noise, so the task is learnable (a training smoke test can see the loss
    fall) while timings match real CIFAR batches. The test set is drawn first, so it
    does not depend on n_train. Generated on the CPU: identical on every device.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((10, 3, 32, 32), generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (n,), generator=g)
        x = 0.5 * templates[y] + 0.5 * torch.rand((n, 3, 32, 32), generator=g)
        return x, y

    test_x, test_y = draw(n_test)
    train_x, train_y = draw(n_train)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, num_classes=10)


# -- CIFAR ----------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batch files but refuses every class except numpy arrays.

    The files come from outside the project; a plain `pickle.load` would run whatever
    code a crafted file names.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refuses to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2 name, no warning
        return super().find_class(module, name)


def _read_cifar_pickle(name: str, path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle -> (N,3,32,32) uint8 and (N,) int64; rows are R, G, B planes of 32x32."""
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(
            f"{name}: {path} is not a CIFAR python pickle ({msg}); "
            f"re-download it (data.download=true into an empty data.root)"
        ) from None
    if not isinstance(d, dict):
        raise UserError(f"{name}: {path} is malformed: expected a dict, found {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise UserError(
            f"{name}: {path} is malformed: expected keys 'data' and '{label_key}', found {sorted(map(str, d))}"
        )
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise UserError(
            f"{name}: {path} is malformed: 'data' must be a uint8 array of shape (N, 3072), found {dtype} {shape}"
        )
    try:
        labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"{name}: {path} is malformed: '{label_key}' is not a list of integers") from None
    if len(labels) != len(data):
        raise UserError(f"{name}: {path} is malformed: {len(data)} images but {len(labels)} '{label_key}'")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{name}: {path} is malformed: '{label_key}' outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar(name: str, root: Path, download: bool, label_key: str, num_classes: int) -> Dataset:
    paths = _require(name, root, download)
    parts = [_read_cifar_pickle(name, p, label_key, num_classes) for p in paths]
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    test_x, test_y = parts[-1]
    return Dataset(
        name,
        torch.from_numpy(np.ascontiguousarray(train_x)),
        torch.from_numpy(train_y),
        torch.from_numpy(np.ascontiguousarray(test_x)),
        torch.from_numpy(test_y),
        num_classes,
    )


def _load_cifar10(root: Path, download: bool) -> Dataset:
    return _cifar("cifar10", root, download, "labels", 10)


def _load_cifar100(root: Path, download: bool) -> Dataset:
    return _cifar("cifar100", root, download, "fine_labels", 100)


# -- SVHN -----------------------------------------------------------------------------


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN cropped-digits .mat -> (N,3,32,32) uint8 and (N,) int64, label 10 -> digit 0."""
    import scipy.io

    try:
        m = scipy.io.loadmat(str(path))
    except Exception as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"svhn: {path} is not a MATLAB .mat file ({msg}); re-download it") from None
    if "X" not in m or "y" not in m:
        raise UserError(
            f"svhn: {path} is malformed: expected variables 'X' and 'y', "
            f"found {sorted(k for k in m if not k.startswith('__'))}"
        )
    x, y = m["X"], m["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise UserError(
            f"svhn: {path} is malformed: 'X' must be uint8 of shape (32, 32, 3, N), found {x.dtype} {x.shape}"
        )
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if len(y) != x.shape[3]:
        raise UserError(f"svhn: {path} is malformed: {x.shape[3]} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise UserError(f"svhn: {path} is malformed: labels outside 0..10")
    y = np.where(y == 10, 0, y)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def _load_svhn(root: Path, download: bool) -> Dataset:
    paths = _require("svhn", root, download)
    train_x, train_y = _read_svhn_mat(paths[0])
    test_x, test_y = _read_svhn_mat(paths[1])
    return Dataset(
        "svhn",
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        10,
    )


# -- TinyImageNet -----------------------------------------------------------------------

_IMG_EXT = (".jpeg", ".jpg", ".png")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMG_EXT)


def _class_images(folder: Path) -> list[Path]:
    """Images of one class folder: <class>/images/* (original layout) or <class>/* (ImageFolder)."""
    inner = folder / "images"
    return _images_in(inner) if inner.is_dir() else _images_in(folder)


def _read_images(paths: list[Path]) -> np.ndarray:
    """Decode RGB images in threads (PIL releases the GIL while decoding) -> (N,3,H,W) uint8."""
    from PIL import Image

    def read(p: Path) -> np.ndarray:
        try:
            with Image.open(p) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as exc:
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(f"tinyimagenet: cannot read image {p} ({msg})") from None

    if not paths:
        return np.zeros((0, 3, 64, 64), np.uint8)
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 2)) as pool:
        arrays = list(pool.map(read, paths))
    shape = arrays[0].shape
    for p, a in zip(paths, arrays):
        if a.shape != shape:
            raise UserError(
                f"tinyimagenet: {p} is {a.shape[1]}x{a.shape[0]}, but {paths[0]} is "
                f"{shape[1]}x{shape[0]}; all images must have one size (64x64)"
            )
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))


def _load_tinyimagenet(root: Path, download: bool) -> Dataset:
    if download and not ((root / "tiny-imagenet-200").is_dir() or (root / "train").is_dir()):
        raise UserError(
            f"tinyimagenet: cannot be downloaded automatically; download tiny-imagenet-200.zip "
            f"by hand and unpack it into {root} (expected layout: {TIN_LAYOUT})"
        )
    base = root / "tiny-imagenet-200"
    if not base.is_dir() and (root / "train").is_dir():
        base = root  # data.root points at tiny-imagenet-200 itself
    train_dir, val_dir = base / "train", base / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise UserError(
                f"tinyimagenet: expected folder {d} (layout: {TIN_LAYOUT}); set data.root to the "
                f"folder that contains tiny-imagenet-200"
            )
    wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not wnids:
        raise UserError(f"tinyimagenet: {train_dir} has no class folders (layout: {TIN_LAYOUT})")
    index = {w: i for i, w in enumerate(wnids)}

    train_paths, train_labels = [], []
    for w in wnids:
        imgs = _class_images(train_dir / w)
        if not imgs:
            raise UserError(f"tinyimagenet: class folder {train_dir / w} has no .JPEG/.jpg/.png images")
        train_paths += imgs
        train_labels += [index[w]] * len(imgs)

    test_paths, test_labels = [], []
    ann = val_dir / "val_annotations.txt"
    if ann.is_file() and (val_dir / "images").is_dir():
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2 or cols[1] not in index:
                raise UserError(
                    f"tinyimagenet: {ann} line {n} is malformed: expected "
                    f"'<file>\\t<wnid>...' with a wnid of a train folder, found {line[:80]!r}"
                )
            p = val_dir / "images" / cols[0]
            if not p.is_file():
                raise UserError(f"tinyimagenet: {ann} line {n} names {p}, which does not exist")
            test_paths.append(p)
            test_labels.append(index[cols[1]])
    else:
        classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and p.name != "images")
        if not classes:
            raise UserError(
                f"tinyimagenet: expected {ann} with {val_dir / 'images'}, or class folders "
                f"{val_dir}/<wnid>/ (layout: {TIN_LAYOUT})"
            )
        for w in classes:
            if w not in index:
                raise UserError(f"tinyimagenet: {val_dir / w} is not a class of {train_dir}")
            imgs = _class_images(val_dir / w)
            test_paths += imgs
            test_labels += [index[w]] * len(imgs)

    train_x = _read_images(train_paths)
    test_x = _read_images(test_paths)
    if test_x.shape[1:] != train_x.shape[1:] and len(test_x):
        raise UserError(
            f"tinyimagenet: {val_dir} images are {test_x.shape[3]}x{test_x.shape[2]}, "
            f"train images {train_x.shape[3]}x{train_x.shape[2]}; they must match"
        )
    return Dataset(
        "tinyimagenet",
        torch.from_numpy(train_x),
        torch.tensor(train_labels, dtype=torch.int64),
        torch.from_numpy(test_x),
        torch.tensor(test_labels, dtype=torch.int64),
        len(wnids),
    )
