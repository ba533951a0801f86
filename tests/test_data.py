"""Data: the embedded digits, readers for local MNIST (IDX) and CIFAR-10 (pickle) files written here in those
formats, malformed and missing files, and input preprocessing."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import experiment_from_dict
from normbench.data import DataError, build_dataset, preprocess


def data_cfg(**kw):
    return experiment_from_dict({"name": "t", "data": kw}).runs[0].config.data


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.RandomState(0)
    for prefix, n, gz in (("train", 50, False), ("t10k", 20, True)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.randint(0, 256, (n, 28, 28)), compress=gz)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.randint(0, 10, n), compress=gz)
    return tmp_path


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.RandomState(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, n in (("data_batch_1", 30), ("data_batch_2", 20), ("test_batch", 10)):
        batch = {b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8), b"labels": list(rng.randint(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    return tmp_path


def test_digits_is_embedded_and_split_deterministically():
    d = build_dataset(data_cfg(name="digits"))
    assert d.input_shape == (1, 8, 8) and d.task == "classification" and d.n_classes == 10
    assert len(d.x_train) + len(d.x_test) == 1797 and len(d.x_test) == round(1797 * 0.2)
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) <= 1.0
    again = build_dataset(data_cfg(name="digits", n=100))
    assert len(again.x_train) == 100
    assert (again.y_train == d.y_train[:100]).all()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_reader(mnist_dir, name):
    d = build_dataset(data_cfg(name=name, path=str(mnist_dir)))
    assert d.x_train.shape == (50, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    raw = np.frombuffer((mnist_dir / "train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    np.testing.assert_allclose(d.x_train.numpy().ravel(), raw / 255.0, rtol=1e-6)
    labels = np.frombuffer((mnist_dir / "train-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    assert d.y_train.tolist() == labels.tolist()


def test_cifar_reader(cifar_dir):
    d = build_dataset(data_cfg(name="cifar10", path=str(cifar_dir)))
    assert d.x_train.shape == (50, 3, 32, 32) and d.x_test.shape == (10, 3, 32, 32)
    first = pickle.loads((cifar_dir / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    np.testing.assert_allclose(d.x_train[0].numpy().ravel(), first[b"data"][0] / 255.0, rtol=1e-6)


def test_bad_files_are_clear_errors(tmp_path, mnist_dir, cifar_dir):
    with pytest.raises(DataError, match="no such folder"):
        build_dataset(data_cfg(name="mnist", path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="give the folder"):
        build_dataset(data_cfg(name="mnist"))
    (mnist_dir / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09" + b"\x01" * 3)
    with pytest.raises(DataError, match="header says shape"):
        build_dataset(data_cfg(name="mnist", path=str(mnist_dir)))
    (mnist_dir / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="bad magic"):
        build_dataset(data_cfg(name="mnist", path=str(mnist_dir)))
    (mnist_dir / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        build_dataset(data_cfg(name="mnist", path=str(mnist_dir)))
    (cifar_dir / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        build_dataset(data_cfg(name="cifar10", path=str(cifar_dir)))


def test_missing_data_files_fail_the_cli_in_one_line(tmp_path):
    raw = {"name": "t", "data": {"name": "mnist", "path": str(tmp_path)}, "model": {"name": "cnn"}}
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(raw))
    for cmd in ("validate", "run"):
        result = CliRunner().invoke(
            app, [cmd, str(cfg), "--out", str(tmp_path / "out")][: 2 if cmd == "validate" else 4]
        )
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "missing train-images-idx3-ubyte" in result.output
    assert not (tmp_path / "out").exists()  # nothing written before the data was found wrong


def test_preprocessing_whitens_with_training_statistics():
    rng = np.random.RandomState(0)
    mix = rng.randn(5, 5)
    a = rng.randn(2000, 1, 5) @ mix + 3  # correlated features
    b = rng.randn(100, 1, 5) @ mix + 3
    za, _zb = preprocess("zscore", a, b)
    np.testing.assert_allclose(za.reshape(2000, -1).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(za.reshape(2000, -1).std(0), 1, atol=1e-12)
    for kind in ("pca", "zca"):
        wa, wb = preprocess(kind, a, b, eps=0.0)
        flat = wa.reshape(2000, -1)
        np.testing.assert_allclose(np.cov(flat, rowvar=False), np.eye(5), atol=1e-8)
        assert wb.shape[0] == 100
    za_img, _ = preprocess("zca", a, b)
    assert za_img.shape == a.shape  # ZCA keeps images images
    # ZCA stays closest to the input among whitenings: each whitened feature correlates with its own original
    wa, _ = preprocess("zca", a, b, eps=0.0)
    corr = np.corrcoef(wa.reshape(2000, -1).T, a.reshape(2000, -1).T)[:5, 5:]
    assert (np.diag(corr) > 0.3).all()


class _Shell:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_a_cifar_batch_that_asks_for_code_is_refused(cifar_dir, tmp_path, monkeypatch):
    """A pickle whose __reduce__ names os.system: the reader refuses the global, nothing runs."""
    monkeypatch.chdir(tmp_path)
    (cifar_dir / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _Shell(), b"labels": []}))
    with pytest.raises(DataError, match=r"refused: the file asks to load (posix|os|nt)\.system"):
        build_dataset(data_cfg(name="cifar10", path=str(cifar_dir)))
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    folder = tmp_path / "c"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for name in ("data_batch_1", "test_batch"):
        batch = {b"data": rng.randint(0, 256, (4, 3072)).astype(np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    d = build_dataset(data_cfg(name="cifar10", path=str(folder)))
    assert d.x_train.shape == (4, 3, 32, 32)
