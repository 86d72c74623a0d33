"""The real loaders on the real cached files, and the integrity checks that guard them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kexue.data import (
    SOURCES,
    DataError,
    data_root,
    load_chinese_reviews,
    load_fashion_mnist,
    load_imdb,
    load_mnist,
    load_multimnist,
    load_tweets,
    read_idx,
    require,
    status,
)
from kexue.data import images as images_mod


def test_every_source_is_verified() -> None:
    rows = status()
    assert [r.name for r in rows] == list(SOURCES)
    bad = [f"{r.name}: {r.problem}" for r in rows if not r.verified]
    assert not bad, bad


def test_mnist_splits_shapes_and_canonical_counts() -> None:
    x, y = load_mnist("train_full")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert abs(float(x.mean()) - 0.1307) < 1e-3  # the canonical MNIST mean pixel
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert y[:5].tolist() == [5, 0, 4, 1, 9]
    xt, yt = load_mnist("test")
    assert xt.shape == (10000, 1, 28, 28)
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    tr, va = load_mnist("train")[0], load_mnist("val")[0]
    assert tr.shape[0] == 55000 and va.shape[0] == 5000
    # train and val are disjoint and together are the official training set
    key = lambda t: set(t.flatten(1).mul(255).round().to(torch.int64).sum(1).tolist())  # noqa: E731
    assert len(key(tr) | key(va)) <= len(key(x))


def test_fashion_mnist_is_balanced() -> None:
    x, y = load_fashion_mnist("train_full")
    assert x.shape == (60000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [6000] * 10
    assert torch.bincount(load_fashion_mnist("test")[1]).tolist() == [1000] * 10


def test_limit_is_explicit_and_never_silently_short() -> None:
    assert load_mnist("val", limit=7)[0].shape[0] == 7
    with pytest.raises(ValueError, match="exceeds the 5000"):
        load_mnist("val", limit=5001)
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist("dev")  # type: ignore[arg-type]


def test_multimnist_two_digits_from_the_same_split() -> None:
    x, y = load_multimnist("test", limit=300)
    assert x.shape == (300, 1, 36, 36) and y.shape == (300, 2)
    assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0
    # the overlay holds at least the ink of each digit (max-combination)
    single, _ = load_mnist("test", limit=300)
    assert (x.sum((1, 2, 3)) >= single.sum((1, 2, 3)) - 1e-4).all()
    x2, y2 = load_multimnist("test", limit=300)
    torch.testing.assert_close(x, x2)
    assert torch.equal(y, y2)
    assert (y[:, 0] != y[:, 1]).float().mean() > 0.8


def test_imdb_dedupe_split_balance() -> None:
    tr, ytr = load_imdb("train")
    te, yte = load_imdb("test")
    va, _ = load_imdb("val")
    n = len(tr) + len(te) + len(va)
    assert 49000 < n <= 49582
    assert not set(tr) & set(te) and not set(va) & set(te)
    assert all("<br" not in t for t in tr[:2000])
    assert 0.45 < float(ytr.float().mean()) < 0.55 and 0.45 < float(yte.float().mean()) < 0.55


def test_chinese_reviews_and_tweets() -> None:
    tr, y = load_chinese_reviews("train")
    te, _ = load_chinese_reviews("test")
    assert 16000 < len(tr) + len(te) + len(load_chinese_reviews("val")[0]) < 17600
    assert not set(tr) & set(te)
    assert set(y.tolist()) == {0, 1}
    texts, labels, conf = load_tweets("train")
    assert len(texts) == labels.shape[0] == conf.shape[0]
    assert set(labels.tolist()) == {0, 1, 2}
    finite = conf[~conf.isnan()]
    assert float(finite.min()) >= 0.25 and float(finite.max()) <= 1.0
    assert conf.isnan().any()  # the source leaves some confidences empty


@pytest.fixture
def corrupt_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data root holding a copy of mnist whose test labels are truncated."""
    src = require("mnist")
    dst = tmp_path / "mnist"
    shutil.copytree(src, dst)
    lab = dst / "t10k-labels-idx1-ubyte"
    lab.write_bytes(lab.read_bytes()[:-100])
    monkeypatch.setenv("KEXUE_DATA", str(tmp_path))
    images_mod._load_raw.cache_clear()
    yield tmp_path
    images_mod._load_raw.cache_clear()


def test_corrupt_file_is_reported_with_the_fix(corrupt_root: Path) -> None:
    assert data_root() == corrupt_root
    row = status(["mnist"])[0]
    assert row.present and not row.verified
    assert "t10k-labels-idx1-ubyte" in row.problem
    with pytest.raises(DataError, match=r"dataset 'mnist'.*t10k-labels.*Fix: kexue data fetch mnist --force"):
        load_mnist("test")
    proc = subprocess.run(
        [sys.executable, "-m", "kexue.cli", "data", "status", "mnist", "imdb"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "kexue data fetch mnist --force" in proc.stdout
    assert "imdb" in proc.stdout  # missing from this root: reported, not a crash


def test_missing_dataset_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEXUE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="imdb.*is missing.*kexue data fetch imdb"):
        require("imdb")


def test_read_idx_rejects_truncation_and_garbage(tmp_path: Path) -> None:
    good = require("mnist") / "t10k-labels-idx1-ubyte"
    bad = tmp_path / "bad-idx"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(DataError, match="header says 10008"):
        read_idx(bad, dataset="mnist")
    bad.write_bytes(b"not an idx file at all")
    with pytest.raises(DataError, match="not a uint8 IDX"):
        read_idx(bad, dataset="mnist")
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(gz, dataset="fashion_mnist")
