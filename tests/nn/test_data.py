"""engine.nn.datasets: dataset readers on fake folders in the real on-disk formats, and augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

from engine.config.schema import DataConfig
from engine.errors import UserError
from engine.nn.datasets import Dataset, as_float, augment, epoch_batches, load_dataset

# ---------------------------------------------------------------------------------------
# fake folders
# ---------------------------------------------------------------------------------------


def _cifar_rows(rng: np.random.RandomState, n: int) -> np.ndarray:
    return rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)


def _write_pickle(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_cifar10(root, n_per_batch=4, n_test=6, seed=0):
    """5 train batches + test_batch, as the python-2 pickles of the real archive (bytes keys)."""
    rng = np.random.RandomState(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rows, labels = [], []
    for i in range(1, 6):
        r = _cifar_rows(rng, n_per_batch)
        lab = [int(v) for v in rng.randint(0, 10, n_per_batch)]
        _write_pickle(
            base / f"data_batch_{i}",
            {b"batch_label": b"training batch", b"data": r, b"labels": lab, b"filenames": [b"x.png"] * n_per_batch},
        )
        rows.append(r)
        labels += lab
    tr = _cifar_rows(rng, n_test)
    tl = [int(v) for v in rng.randint(0, 10, n_test)]
    # a newer protocol for the test batch: readers must not depend on one
    _write_pickle(base / "test_batch", {b"data": tr, b"labels": tl}, protocol=pickle.HIGHEST_PROTOCOL)
    return np.concatenate(rows), np.array(labels), tr, np.array(tl)


def make_cifar100(root, n_train=7, n_test=5, seed=1):
    rng = np.random.RandomState(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = []
    for name, n in (("train", n_train), ("test", n_test)):
        r = _cifar_rows(rng, n)
        fine = [int(v) for v in rng.randint(0, 100, n)]
        coarse = [int(v) for v in rng.randint(0, 20, n)]
        _write_pickle(base / name, {b"data": r, b"fine_labels": fine, b"coarse_labels": coarse})
        out += [r, np.array(fine)]
    return out


def make_svhn(root, n_train=6, n_test=4, seed=2):
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.randint(0, 256, size=(32, 32, 3, n)).astype(np.uint8)
        y = rng.randint(1, 11, size=(n, 1)).astype(np.uint8)  # 1..10, 10 = digit 0
        y[0, 0] = 10
        scipy.io.savemat(str(root / f"{name}_32x32.mat"), {"X": x, "y": y})
        out += [x, y]
    return out


def _solid(path, color, size=64):
    Image.new("RGB", (size, size), color).save(path)


TIN_COLORS = {  # (wnid, index) -> colour: far apart, so JPEG error cannot confuse them
    ("n02", 0): (250, 10, 10),
    ("n02", 1): (10, 250, 10),
    ("n02", 2): (10, 10, 250),
    ("n01", 0): (250, 250, 10),
    ("n01", 1): (10, 250, 250),
    ("n01", 2): (250, 10, 250),
}


def make_tinyimagenet(root):
    """tiny-imagenet-200 as unpacked from the zip: train/<wnid>/images + val/images + annotations."""
    base = root / "tiny-imagenet-200"
    for (w, i), color in TIN_COLORS.items():
        d = base / "train" / w / "images"
        d.mkdir(parents=True, exist_ok=True)
        _solid(d / f"{w}_{i}.JPEG", color)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    vi = base / "val" / "images"
    vi.mkdir(parents=True)
    val = [
        ("val_0.JPEG", "n02", (250, 10, 10)),
        ("val_1.JPEG", "n01", (10, 250, 250)),
        ("val_2.JPEG", "n02", (10, 10, 250)),
    ]
    for f, _, color in val:
        _solid(vi / f, color)
    (base / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w, _ in val))
    return base, val


# ---------------------------------------------------------------------------------------
# digits / synthetic
# ---------------------------------------------------------------------------------------


def test_digits_shapes_range_split():
    ds = load_dataset(DataConfig(dataset="digits", split_seed=0))
    assert isinstance(ds, Dataset) and ds.name == "digits" and ds.num_classes == 10
    n = len(ds.train_y) + len(ds.test_y)
    assert n == 1797
    assert len(ds.test_y) == round(0.2 * n) and len(ds.train_y) == n - round(0.2 * n)
    assert ds.train_x.shape == (len(ds.train_y), 1, 8, 8) and ds.test_x.shape == (len(ds.test_y), 1, 8, 8)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.in_channels == 1 and ds.image_size == 8
    for x in (ds.train_x, ds.test_x):
        assert x.min() >= 0 and x.max() <= 1 and x.max() == 1
        assert torch.equal(x * 16, (x * 16).round())  # exact k/16 values
    assert set(ds.train_y.tolist()) == set(range(10)) == set(ds.test_y.tolist())
    # stratified: every class has about 20 % of its images in test
    for c in range(10):
        n_c = int((ds.train_y == c).sum() + (ds.test_y == c).sum())
        assert abs(int((ds.test_y == c).sum()) - 0.2 * n_c) <= 1
    assert ds.train_x.is_contiguous() and ds.train_x.device.type == "cpu"


def test_digits_split_deterministic_per_seed():
    a = load_dataset(DataConfig(dataset="digits", split_seed=3))
    b = load_dataset(DataConfig(dataset="digits", split_seed=3))
    c = load_dataset(DataConfig(dataset="digits", split_seed=4))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.test_x, c.test_x)
    # the two splits partition the same images
    key = lambda ds: sorted(map(tuple, torch.cat([ds.train_x, ds.test_x]).flatten(1).tolist()))  # noqa: E731
    assert key(a) == key(c)


def test_n_train_keeps_first_images():
    full = load_dataset(DataConfig(dataset="digits"))
    part = load_dataset(DataConfig(dataset="digits", n_train=50))
    assert torch.equal(part.train_x, full.train_x[:50]) and torch.equal(part.train_y, full.train_y[:50])
    assert torch.equal(part.test_x, full.test_x)
    assert part.train_x.is_contiguous()


def test_label_noise_is_symmetric_fixed_and_train_only():
    clean = load_dataset(DataConfig(dataset="digits", n_train=400))
    noisy = load_dataset(DataConfig(dataset="digits", n_train=400, label_noise=0.2))
    again = load_dataset(DataConfig(dataset="digits", n_train=400, label_noise=0.2))
    other = load_dataset(DataConfig(dataset="digits", n_train=400, label_noise=0.2, split_seed=1))
    changed = noisy.train_y != clean.train_y
    assert int(changed.sum()) == 80  # exactly round(0.2 * 400), each moved to another class
    assert torch.equal(noisy.train_y, again.train_y)  # a split_seed names one noisy set
    assert not torch.equal(other.train_y, load_dataset(DataConfig(dataset="digits", n_train=400, split_seed=1)).train_y)
    assert torch.equal(noisy.train_x, clean.train_x) and torch.equal(noisy.test_y, clean.test_y)
    assert noisy.train_y.dtype == torch.int64 and 0 <= int(noisy.train_y.min()) and int(noisy.train_y.max()) <= 9
    # the new labels spread over all the other classes
    full = load_dataset(DataConfig(dataset="digits"))
    half = load_dataset(DataConfig(dataset="digits", label_noise=0.5))
    moved = half.train_y != full.train_y
    assert int(moved.sum()) == round(0.5 * len(full.train_y))
    assert set(((half.train_y - full.train_y) % 10)[moved].tolist()) == set(range(1, 10))
    assert torch.equal(load_dataset(DataConfig(dataset="digits", n_train=400, label_noise=0.0)).train_y, clean.train_y)


def test_synthetic():
    ds = load_dataset(DataConfig(dataset="synthetic", split_seed=1))
    assert ds.train_x.shape == (1000, 3, 32, 32) and ds.test_x.shape == (500, 3, 32, 32)
    assert ds.train_x.dtype == torch.float32 and 0 <= ds.train_x.min() and ds.train_x.max() <= 1
    assert ds.num_classes == 10 and ds.train_y.min() >= 0 and ds.train_y.max() <= 9
    again = load_dataset(DataConfig(dataset="synthetic", split_seed=1))
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)
    other = load_dataset(DataConfig(dataset="synthetic", split_seed=2))
    assert not torch.equal(ds.train_x, other.train_x)
    small = load_dataset(DataConfig(dataset="synthetic", split_seed=1, n_train=64))
    assert small.train_x.shape[0] == 64 and torch.equal(small.test_x, ds.test_x)


def test_dataset_to_and_as_float():
    ds = load_dataset(DataConfig(dataset="digits", n_train=10))
    moved = ds.to("cpu")
    assert torch.equal(moved.train_x, ds.train_x) and moved.num_classes == 10
    x = torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8)
    f = as_float(x)
    assert f.dtype == torch.float32 and torch.allclose(f, torch.tensor([[[[0.0, 1.0, 0.2]]]]))
    y = torch.rand(2, 3)
    assert as_float(y) is y


# ---------------------------------------------------------------------------------------
# image datasets from fake folders
# ---------------------------------------------------------------------------------------


def test_cifar10_roundtrip(tmp_path):
    rows, labels, test_rows, test_labels = make_cifar10(tmp_path)
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)))
    assert ds.num_classes == 10 and ds.in_channels == 3 and ds.image_size == 32
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (6, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.is_contiguous()
    assert ds.train_y.tolist() == labels.tolist() and ds.test_y.tolist() == test_labels.tolist()
    # a row is the R plane, then G, then B, each 32x32 row-major
    for i in (0, 7, 19):
        r = rows[i]
        for c in range(3):
            assert np.array_equal(ds.train_x[i, c].numpy(), r[c * 1024 : (c + 1) * 1024].reshape(32, 32))
    assert int(ds.train_x[5, 1, 2, 3]) == int(rows[5][1024 + 2 * 32 + 3])
    assert np.array_equal(ds.test_x.numpy().reshape(6, -1), test_rows)

    part = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), n_train=9))
    assert part.train_x.shape[0] == 9 and torch.equal(part.train_x, ds.train_x[:9])


def test_cifar100_roundtrip(tmp_path):
    tr, tr_y, te, te_y = make_cifar100(tmp_path)
    ds = load_dataset(DataConfig(dataset="cifar100", root=str(tmp_path)))
    assert ds.num_classes == 100
    assert ds.train_x.shape == (7, 3, 32, 32) and ds.test_x.shape == (5, 3, 32, 32)
    assert np.array_equal(ds.train_x.numpy().reshape(7, -1), tr)
    assert np.array_equal(ds.test_x.numpy().reshape(5, -1), te)
    assert ds.train_y.tolist() == tr_y.tolist() and ds.test_y.tolist() == te_y.tolist()


def test_svhn_roundtrip_and_label_10_is_0(tmp_path):
    x, y, tx, ty = make_svhn(tmp_path)
    ds = load_dataset(DataConfig(dataset="svhn", root=str(tmp_path)))
    assert ds.num_classes == 10
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.is_contiguous()
    # X[h, w, c, n] -> x[n, c, h, w]
    assert np.array_equal(ds.train_x.numpy(), x.transpose(3, 2, 0, 1))
    assert np.array_equal(ds.test_x.numpy(), tx.transpose(3, 2, 0, 1))
    assert int(ds.train_y[0]) == 0 and int(ds.test_y[0]) == 0
    assert ds.train_y.tolist() == [v % 10 for v in y[:, 0].tolist()]
    assert ds.train_y.max() <= 9


@pytest.mark.parametrize("point_at_inner", [False, True])
def test_tinyimagenet_raw_layout(tmp_path, point_at_inner):
    base, val = make_tinyimagenet(tmp_path)
    root = base if point_at_inner else tmp_path
    ds = load_dataset(DataConfig(dataset="tinyimagenet", root=str(root)))
    assert ds.num_classes == 2 and ds.image_size == 64 and ds.in_channels == 3
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.test_x.shape == (3, 3, 64, 64)
    assert ds.train_x.dtype == torch.uint8
    # classes in sorted wnid order: n01 -> 0, n02 -> 1; train images sorted within a class
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    for k, key in enumerate([("n01", 0), ("n01", 1), ("n01", 2), ("n02", 0), ("n02", 1), ("n02", 2)]):
        mean = ds.train_x[k].float().mean(dim=(1, 2))
        assert torch.allclose(mean, torch.tensor(TIN_COLORS[key], dtype=torch.float32), atol=4)
    assert ds.test_y.tolist() == [{"n01": 0, "n02": 1}[w] for _, w, _ in val]
    for k, (_, _, color) in enumerate(val):
        mean = ds.test_x[k].float().mean(dim=(1, 2))
        assert torch.allclose(mean, torch.tensor(color, dtype=torch.float32), atol=4)


def test_tinyimagenet_imagefolder_layout_exact_pixels(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    rng = np.random.RandomState(0)
    imgs = {}
    for split, n in (("train", 2), ("val", 1)):
        for w in ("b", "a"):
            d = base / split / w
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.randint(0, 256, size=(64, 64, 3)).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.png")
                imgs[(split, w, i)] = a
    ds = load_dataset(DataConfig(dataset="tinyimagenet", root=str(tmp_path)))
    assert ds.train_y.tolist() == [0, 0, 1, 1] and ds.test_y.tolist() == [0, 1]
    assert np.array_equal(ds.train_x[0].numpy(), imgs[("train", "a", 0)].transpose(2, 0, 1))
    assert np.array_equal(ds.train_x[3].numpy(), imgs[("train", "b", 1)].transpose(2, 0, 1))
    assert np.array_equal(ds.test_x[1].numpy(), imgs[("val", "b", 0)].transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------
# errors: one line, naming the file
# ---------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize(
    "name,expected",
    [
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("svhn", "train_32x32.mat"),
        ("tinyimagenet", "tiny-imagenet-200/train"),
    ],
)
def test_missing_folder(tmp_path, name, expected):
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset=name, root=str(tmp_path)))
    msg = _one_line(exc)
    assert msg.startswith(f"{name}: ")
    assert str(tmp_path / expected) in msg
    assert "data.root" in msg


def test_missing_one_cifar_batch_is_named(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_4") in _one_line(exc)


def test_empty_root():
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="cifar10", root=""))
    assert "data.root" in _one_line(exc)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a pickle",
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}),  # no labels
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),  # wrong shape
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),  # count mismatch
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),  # label out of range
        pickle.dumps([1, 2, 3]),
    ],
)
def test_malformed_pickle_names_file(tmp_path, content):
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(content)
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)))
    msg = _one_line(exc)
    assert msg.startswith("cifar10: ") and str(bad) in msg


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_refuses_arbitrary_classes(tmp_path, capsys):
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)))
    assert str(bad) in _one_line(exc)
    assert "pwned" not in capsys.readouterr().out


def test_malformed_svhn_names_file(tmp_path):
    make_svhn(tmp_path)
    bad = tmp_path / "test_32x32.mat"
    scipy.io.savemat(str(bad), {"X": np.zeros((8, 8, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="svhn", root=str(tmp_path)))
    assert str(bad) in _one_line(exc)
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="svhn", root=str(tmp_path)))
    assert str(bad) in _one_line(exc)


def test_tinyimagenet_bad_annotation_and_download(tmp_path):
    base, _ = make_tinyimagenet(tmp_path)
    ann = base / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="tinyimagenet", root=str(tmp_path)))
    assert str(ann) in _one_line(exc)
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="tinyimagenet", root=str(tmp_path / "empty"), download=True))
    msg = _one_line(exc)
    assert "by hand" in msg and "tiny-imagenet-200" in msg


def test_download_uses_torchvision_then_own_reader(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            if not (tmp_path / "cifar-10-batches-py").exists():
                make_cifar10(tmp_path)

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), download=True))
    assert ds.train_x.shape == (20, 3, 32, 32)
    assert calls and all(c[2] for c in calls) and {c[1] for c in calls} == {True, False}

    class Offline:
        def __init__(self, *a, **k):
            raise RuntimeError("Error downloading\nno network")

    monkeypatch.setattr(tvd, "SVHN", Offline)
    with pytest.raises(UserError) as exc:
        load_dataset(DataConfig(dataset="svhn", root=str(tmp_path / "s"), download=True))
    msg = _one_line(exc)
    assert msg.startswith("svhn: ") and "no network" in msg


# ---------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unique_images(b: int, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    """Every pixel distinct and non-zero, so each window of the padded image is identifiable."""
    return (1 + torch.arange(b * c * h * w, dtype=torch.float32)).reshape(b, c, h, w)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_shape_dtype(dtype):
    x = torch.randint(1, 256, (16, 3, 32, 32)).to(dtype)
    out = augment(x, padding=4, flip=True, generator=_gen(0))
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    assert augment(x, padding=0, flip=False, generator=_gen(0)) is x
    out2 = augment(x, padding=4, flip=False, generator=None)  # global RNG
    assert out2.shape == x.shape and out2.dtype == dtype


def test_augment_deterministic_per_generator_seed():
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    a = augment(x, padding=3, flip=True, generator=_gen(7))
    b = augment(x, padding=3, flip=True, generator=_gen(7))
    c = augment(x, padding=3, flip=True, generator=_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_flip_only():
    x = _unique_images(200)
    out = augment(x, padding=0, flip=True, generator=_gen(1))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 60 < int(flipped.sum()) < 140  # both states occur (p = 0.5)


def _windows(xi: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Reference: every (2p+1)^2 crop of the zero-padded image, by F.pad and slicing."""
    _, h, w = xi.shape
    padded = F.pad(xi, (p, p, p, p))
    return [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * p + 1) for dx in range(2 * p + 1)]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_crop_only_is_a_window_of_padded_input(dtype):
    p = 2
    x = (_unique_images(40, c=2, h=6, w=7) % 255 + 1).to(dtype) if dtype == torch.uint8 else _unique_images(40, 2, 6, 7)
    out = augment(x, padding=p, flip=False, generator=_gen(2))
    offsets = set()
    for i in range(len(x)):
        matches = [k for k, win in enumerate(_windows(x[i], p)) if torch.equal(out[i], win)]
        assert matches, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets vary per sample


def test_augment_offsets_and_flips_uniform():
    """Each of (2p+1)^2 offsets x 2 flip states occurs about equally often."""
    from scipy.stats import chi2

    p, n = 2, 20000
    img = _unique_images(1, c=1, h=6, w=6)[0]
    cands = []
    for win in _windows(img, p):
        cands += [win, win.flip(-1)]
    cands = torch.stack(cands).flatten(1)  # (2 * 25, 36), index = 2 * offset + flipped
    assert len({tuple(c.tolist()) for c in cands}) == len(cands)
    out = augment(img.expand(n, 1, 6, 6), padding=p, flip=True, generator=_gen(3)).flatten(1)
    eq = (out[:, None, :] == cands[None]).all(-1)  # (n, 50)
    assert bool((eq.sum(1) == 1).all())  # every output is exactly one candidate
    counts = eq.sum(0).double()
    expected = n / len(cands)
    assert float(counts.min()) > 0.75 * expected and float(counts.max()) < 1.25 * expected
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert chi2.sf(stat, len(cands) - 1) > 1e-4
    flips = counts.view(-1, 2).sum(0)
    assert abs(float(flips[1]) / n - 0.5) < 0.02


# ---------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------


def test_epoch_batches():
    bs = epoch_batches(103, 10, _gen(0), "cpu")
    assert len(bs) == 10 and all(b.numel() == 10 and b.dtype == torch.int64 for b in bs)
    flat = torch.cat(bs)
    assert len(set(flat.tolist())) == 100 and flat.min() >= 0 and flat.max() < 103
    keep = epoch_batches(103, 10, _gen(0), "cpu", drop_last=False)
    assert len(keep) == 11 and keep[-1].numel() == 3
    assert sorted(torch.cat(keep).tolist()) == list(range(103))
    assert all(torch.equal(a, b) for a, b in zip(bs, epoch_batches(103, 10, _gen(0), "cpu")))
    assert not torch.equal(torch.cat(bs), torch.cat(epoch_batches(103, 10, _gen(1), "cpu")))
    assert len(epoch_batches(100, 10, _gen(0), "cpu")) == 10
    assert epoch_batches(5, 10, _gen(0), "cpu") == []
