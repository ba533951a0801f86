"""Datasets, chosen by name. Each builder returns whole tensors: these data sets fit in memory many times over.

    data = build_dataset(cfg.data)   # Dataset(x_train (N, *input_shape), y_train, x_test, y_test, task, ...)
    for xb, yb in batches(data.x_train, data.y_train, batch_size=10, shuffle=True, generator=g): ...

| name          | source                                               | task                    | input      |
|---------------|------------------------------------------------------|-------------------------|------------|
| quadratic     | generated: y = x^2 - 5 + noise                       | regression              | (1,)       |
| digits        | the 8x8 digits shipped inside scikit-learn (offline) | 10 classes              | (1, 8, 8)  |
| mnist         | IDX files in data.path (train-images-idx3-ubyte...)  | 10 classes              | (1, 28, 28)|
| fashion_mnist | the same IDX format and file names                   | 10 classes              | (1, 28, 28)|
| cifar10       | the python pickle batches in data.path               | 10 classes              | (3, 32, 32)|
| seq. digits   | sequential_digits: the digits pixel by pixel (data.permuted) | 10 classes      | (64, 1 + 1)|
| adding        | generated: the adding problem (lengths: data.seq_length)     | regression      | (T, 2 + 1) |
| recall        | generated: associative recall (data.pairs key-value pairs)   | data.vocab classes | (T, 2 vocab + 2) |

A sequence data set's x is (N, T, C + 1): T steps of C features, then the padding mask as a last feature (1 at a
real step, 0 at padding, every padded step after the real ones), so that batches, splits and stacks of runs carry
the mask with the values; `unpack_sequences` gives (values, mask) back, as the sequence models read them.

Images are scaled to [0, 1], then `data.preprocess` (as in cs231n's notes on data preprocessing), fitted on the
training split only:
none | zscore (per input feature) | pca (PCA whitening: rotate onto the principal axes, unit variance; the
result is a flat vector, so an MLP only) | zca (ZCA whitening: PCA whitening rotated back, images stay images).
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from normbench.errors import UserError
from normbench.registry import DATASETS
from normbench.safe import short

if TYPE_CHECKING:
    from normbench.config import DataConfig


class DataError(UserError):
    """Data files missing or malformed; the message names the file and what is wrong."""


@dataclass
class Dataset:
    x_train: torch.Tensor  # (N, *input_shape) float32
    y_train: torch.Tensor  # (N, T) float32 for regression, (N,) int64 class indices for classification
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    task: str  # 'regression' | 'classification'
    n_classes: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def out_features(self) -> int:
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "train":
            return self.x_train, self.y_train
        if self.x_test is None or self.y_test is None:
            raise ValueError("this data set has no test split")
        return self.x_test, self.y_test


@DATASETS.register("quadratic")
def quadratic(cfg: DataConfig) -> Dataset:
    """y = x^2 - 5 + Normal(0, noise) on x = linspace(x_min, x_max, n): the tutorial's noisy parabola."""

    # numpy's legacy RandomState so that seed 1 draws the very noise of the tutorial's `np.random.seed(1)` script.
    rng = np.random.RandomState(cfg.seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.linspace(cfg.x_min, cfg.x_max, n)[:, None]  # (n, 1)
        y = np.square(x) - 5 + rng.normal(0.0, cfg.noise, x.shape)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    x_train, y_train = make(500 if cfg.n is None else cfg.n)
    n_test = cfg.n_test or 0
    x_test, y_test = make(n_test) if n_test > 0 else (None, None)
    return Dataset(x_train, y_train, x_test, y_test, task="regression")


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> Dataset:
    """The 1797 8x8 grey digit images bundled with scikit-learn; a seeded split, data.test_fraction held out."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    y = bunch.target.astype(np.int64)
    order = np.random.RandomState(cfg.seed).permutation(len(y))
    n_test = round(len(y) * cfg.test_fraction)
    test, train = order[:n_test], order[n_test:]
    return _images(cfg, x[train], y[train], x[test], y[test])


def pack_sequences(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, T, C) values and an (N, T) bool mask -> x (N, T, C + 1), padded values set to 0."""
    values = torch.where(mask[..., None], values, 0.0)
    return torch.cat([values, mask[..., None].to(values.dtype)], -1)


def unpack_sequences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, T, C + 1) -> values (N, T, C) and the mask (N, T), True at real steps."""
    return x[..., :-1], x[..., -1] > 0.5


def _padded(seqs: list[np.ndarray]) -> torch.Tensor:
    """Sequences of (length, C) -> x (N, max length, C + 1), padded after their ends."""
    steps, features = max(len(s) for s in seqs), seqs[0].shape[1]
    values, mask = np.zeros((len(seqs), steps, features), np.float32), np.zeros((len(seqs), steps), bool)
    for n, s in enumerate(seqs):
        values[n, : len(s)], mask[n, : len(s)] = s, True
    return pack_sequences(torch.from_numpy(values), torch.from_numpy(mask))


@DATASETS.register("sequential_digits", aliases=("seq_digits",))
def sequential_digits(cfg: DataConfig) -> Dataset:
    """The digits read pixel by pixel, 64 steps of one value in [0, 1] (the 8x8 sequential MNIST of Cooijmans et
    al.), in a fixed random order of the pixels with data.permuted (data.permutation_seed); digits' split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0  # (1797, 64), row by row
    if cfg.permuted:
        x = x[:, np.random.RandomState(cfg.permutation_seed).permutation(64)]
    y = bunch.target.astype(np.int64)
    order = np.random.RandomState(cfg.seed).permutation(len(y))
    n_test = round(len(y) * cfg.test_fraction)
    test, train = order[:n_test][: cfg.n_test], order[n_test:][: cfg.n]
    seqs = torch.from_numpy(x)[..., None]  # (N, 64, 1)
    every = torch.ones(seqs.shape[:2], dtype=torch.bool)
    pack = pack_sequences(seqs, every)
    return Dataset(pack[train], torch.from_numpy(y[train]), pack[test], torch.from_numpy(y[test]), "classification", 10)


@DATASETS.register("adding")
def adding(cfg: DataConfig) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber 1997): each step a value U(0, 1) and a marker; two steps are
    marked, one in each half of the sequence; the target is the sum of the two marked values. Each sequence's
    length is drawn from data.seq_length (both ends included), the test split's from data.test_length (default
    the same), so that the test may be longer than any training sequence. data.n (default 1000) and data.n_test
    (default 200) sequences."""
    rng = np.random.RandomState(cfg.seed)

    def make(n: int, lengths: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs, sums = [], []
        for length in rng.randint(lengths[0], lengths[1] + 1, size=n):
            s = np.zeros((length, 2), np.float32)
            s[:, 0] = rng.uniform(0, 1, length)
            first, second = rng.randint(0, length // 2), rng.randint(length // 2, length)
            s[[first, second], 1] = 1.0
            seqs.append(s)
            sums.append(s[first, 0] + s[second, 0])
        return _padded(seqs), torch.tensor(sums, dtype=torch.float32)[:, None]

    x_train, y_train = make(1000 if cfg.n is None else cfg.n, cfg.seq_length)
    n_test = 200 if cfg.n_test is None else cfg.n_test
    x_test, y_test = make(n_test, cfg.test_length or cfg.seq_length) if n_test else (None, None)
    return Dataset(x_train, y_train, x_test, y_test, task="regression")


@DATASETS.register("recall", aliases=("associative_recall",))
def recall(cfg: DataConfig) -> Dataset:
    """Associative recall: k1 v1 k2 v2 ... kP vP ? kq, predict the value that followed the key kq. Keys are
    distinct among data.vocab keys, values any of data.vocab values, tokens one-hot (2 vocab + 1 features: keys,
    values, the query marker); P is drawn per sequence from data.pairs, so batches are padded. data.n (default
    2000) and data.n_test (default 500) sequences; data.vocab classes."""
    rng = np.random.RandomState(cfg.seed)
    v = cfg.vocab
    if cfg.pairs[1] > v:
        raise DataError(f"data.pairs: up to {cfg.pairs[1]} distinct keys, but data.vocab is {v}")

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        seqs, answers = [], []
        for pairs in rng.randint(cfg.pairs[0], cfg.pairs[1] + 1, size=n):
            keys, values = rng.choice(v, pairs, replace=False), rng.randint(0, v, pairs)
            q = rng.randint(pairs)
            tokens = [t for k, val in zip(keys, values, strict=True) for t in (k, v + val)] + [2 * v, keys[q]]
            seqs.append(np.eye(2 * v + 1, dtype=np.float32)[tokens])
            answers.append(values[q])
        return _padded(seqs), torch.tensor(answers, dtype=torch.int64)

    x_train, y_train = make(2000 if cfg.n is None else cfg.n)
    n_test = 500 if cfg.n_test is None else cfg.n_test
    x_test, y_test = make(n_test) if n_test else (None, None)
    return Dataset(x_train, y_train, x_test, y_test, "classification", v)


def _idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic 0x0000 08 D (unsigned bytes, D dims), D big-endian sizes, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    dims = raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(raw) - header != math.prod(shape):
        raise DataError(f"{path}: header says shape {shape} ({math.prod(shape)} bytes), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"data.path {folder}: missing {stem} (or {stem}.gz)")


def _mnist_like(cfg: DataConfig) -> Dataset:
    folder = _data_path(cfg)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        labels = _idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"data.path {folder}: {prefix} images {images.shape} and labels {labels.shape} do not match"
            )
        parts[split] = (images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64))
    return _images(cfg, *parts["train"], *parts["test"])


DATASETS.register("mnist", help="MNIST from the IDX files in data.path (train-/t10k- images and labels)")(_mnist_like)
DATASETS.register("fashion_mnist", help="Fashion-MNIST from IDX files in data.path (MNIST's file names)")(_mnist_like)


@DATASETS.register("cifar10", aliases=("cifar",))
def cifar10(cfg: DataConfig) -> Dataset:
    """CIFAR-10 from the python pickle batches (data_batch_1..5, test_batch) in data.path."""
    folder = _data_path(cfg)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        if not path.is_file():
            raise DataError(f"data.path {folder}: missing CIFAR-10 batch {name}")
        try:
            with open(path, "rb") as f:
                d = _BatchUnpickler(f, encoding="bytes").load()
        except ForbiddenGlobal as e:
            raise DataError(
                f"{path}: refused: the file asks to load {e} (a CIFAR-10 batch needs only numpy arrays)"
            ) from None
        except Exception as e:  # unpickling errors come in many types
            raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {short(str(e))})") from None
        try:  # a dict of arrays, lists, bytes: nothing here runs code
            if not isinstance(d, dict):
                raise TypeError(f"a {type(d).__name__}, not a dict")
            data, labels = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as e:  # unpickling errors come in many types
            raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {short(str(e))})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise DataError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
        return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels

    train = [load(f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    if not train:
        raise DataError(f"data.path {folder}: no CIFAR-10 training batch (data_batch_1 ... data_batch_5)")
    x_test, y_test = load("test_batch")
    return _images(cfg, np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), x_test, y_test)


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global (a class or function) that a data file has no need of."""


# What the python batches of CIFAR-10 may ask for: numpy's array and number reconstruction, nothing else. Dicts, lists,
# bytes, str and ints need no global at all. Any other global could run code (os.system, eval, ...).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),  # a numpy number (labels written as numpy ints)
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2: encode(str, 'latin1'), data only
}


class _BatchUnpickler(pickle.Unpickler):
    """pickle.Unpickler that builds plain containers and numpy arrays only: a file is data, never code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ForbiddenGlobal(f"{module}.{name}"[:120])
        return super().find_class(module, name)


def _data_path(cfg: DataConfig) -> Path:
    if cfg.path is None:
        raise DataError(f"data.path: dataset {cfg.name!r} reads local files; give the folder that holds them")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        try:
            folder.stat()
        except OSError as e:  # missing, a broken link, a loop of links
            raise DataError(f"data.path {short(str(folder), 120)}: no such folder ({e.strerror})") from None
        raise DataError(f"data.path {short(str(folder), 120)}: is a file, not a folder (give the folder that holds it)")
    return folder


def _images(cfg: DataConfig, x_train, y_train, x_test, y_test) -> Dataset:
    """Cap the splits (data.n, data.n_test), preprocess with statistics of the training split, wrap as tensors."""
    x_train, y_train = x_train[: cfg.n], y_train[: cfg.n]
    x_test, y_test = x_test[: cfg.n_test], y_test[: cfg.n_test]
    x_train, x_test = preprocess(cfg.preprocess, x_train, x_test)
    n_classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
    t = torch.from_numpy
    has_test = len(y_test) > 0
    return Dataset(
        t(np.ascontiguousarray(x_train, dtype=np.float32)),
        t(y_train),
        t(np.ascontiguousarray(x_test, dtype=np.float32)) if has_test else None,
        t(y_test) if has_test else None,
        task="classification",
        n_classes=n_classes,
    )


def preprocess(kind: str, x_train: np.ndarray, x_test: np.ndarray, eps: float = 1e-2) -> tuple[np.ndarray, ...]:
    """Fit on x_train (N, ...), apply to both. eps regularizes the whitening of near-zero-variance directions
    (the digits' constant border pixels), in units of the data's variance."""
    if kind == "none":
        return x_train, x_test
    shape = x_train.shape[1:]
    a, b = x_train.reshape(len(x_train), -1).astype(np.float64), x_test.reshape(len(x_test), -1).astype(np.float64)
    mean = a.mean(0)
    if kind == "zscore":
        std = a.std(0)
        std[std < 1e-8] = 1.0  # a constant feature stays 0 after centring instead of dividing by zero
        return ((a - mean) / std).reshape(-1, *shape), ((b - mean) / std).reshape(-1, *shape)
    cov = np.cov(a - mean, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    w = eigvec / np.sqrt(np.maximum(eigval, 0) + eps)  # (D, D): columns are scaled principal axes
    if kind == "pca":
        return (a - mean) @ w, (b - mean) @ w  # flat (N, D)
    if kind == "zca":
        zca = w @ eigvec.T
        return ((a - mean) @ zca).reshape(-1, *shape), ((b - mean) @ zca).reshape(-1, *shape)
    raise ValueError(f"unknown preprocessing {kind!r}")


_CACHE: dict[str, Dataset] = {}


def build_dataset(cfg: DataConfig) -> Dataset:
    """Build (or reuse: every run of a sweep shares its data) the data set of `cfg`."""
    key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    if cfg.path is not None and Path(cfg.path).expanduser().is_dir():  # files changed on disk: read them again
        key += str(sorted(_file_stamps(Path(cfg.path).expanduser())))
    if key not in _CACHE:
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = DATASETS.get(cfg.name)(cfg)
    return _CACHE[key]


def _file_stamps(folder: Path, limit: int = 10_000) -> list[tuple[str, int, int]]:
    """(name, mtime, size) of the files under `folder` (symlinked folders not followed, broken links skipped, at
    most `limit` entries): what tells that the data on disk changed."""
    stamps = []
    for f in itertools.islice(folder.rglob("*"), limit):
        try:
            st = f.stat()
        except OSError:  # a broken or looping symlink
            continue
        stamps.append((str(f.relative_to(folder)), st.st_mtime_ns, st.st_size))
    return stamps


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int | None, shuffle: bool, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless mini-batches, epoch after epoch; batch_size None is the full batch. The last partial batch of an
    epoch is kept (as a DataLoader with drop_last=False does), unless it holds a single sample: batch statistics
    of one sample are undefined (PyTorch's BN refuses them)."""
    n = x.shape[0]
    size = n if batch_size is None else min(batch_size, n)
    if size == n and not shuffle:  # the tutorial's setting: the same full batch every step, no copies
        while True:
            yield x, y
    while True:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n - 1 if n % size == 1 and size > 1 else n, size):
            idx = order[start : start + size]
            yield x[idx], y[idx]


def steps_per_epoch(n: int, batch_size: int | None) -> int:
    if batch_size is None or batch_size >= n:
        return 1
    return n // batch_size + (1 if n % batch_size > 1 else 0)
