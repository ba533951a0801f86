"""Bad input, one table: each invocation exits 2 with one line and no traceback, and leaves an existing results
folder exactly as it was (every file's bytes compared)."""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from normbench.cli import app

runner = CliRunner()


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder with a finished tiny sweep in it, and its config file."""
    import yaml

    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("bad")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "seeds": [1]}))
    out = root / "results"
    assert runner.invoke(app, ["run", str(cfg), "--out", str(out)]).exit_code == 0
    return cfg, out


CASES = {
    "unknown key": ["--set", "model.nrom=batch"],
    "unknown norm": ["--set", "model.norm=batchh"],
    "unknown activation": ["--set", "model.activation=relu6"],
    "unknown optimizer": ["--set", "train.optimizer=lbfgs"],
    "infinite lr": ["--set", "train.lr=.inf"],
    "NaN lr": ["--set", "train.lr=.nan"],
    "boolean lr": ["--set", "train.lr=true"],
    "negative lr": ["--set", "train.lr=-1"],
    "text depth": ["--set", "model.depth=seven"],
    "boolean width": ["--set", "model.width=false"],
    "batch norm on one sample": ["--set", "train.batch_size=1"],
    "steps and epochs": ["--set", "train.epochs=2"],
    "unknown grid key": ["--set", "grid.model.nrom=[none]"],
    "empty grid axis": ["--set", "grid.model.norm=[]"],
    "bad value in the grid": ["--set", "grid.model.norm=[none, bogus]"],
    "instance norm on an MLP": ["--set", "grid.model.norm=[instance]"],
    "group count that does not divide": ["--set", "grid.model.norm=[group]", "--set", "model.norm_groups=3"],
    "no KEY=VALUE": ["--set", "train.lr"],
    "value not YAML": ["--set", "train.lr=[1,"],
    "model too large": ["--set", "model.width=10000000"],
    "layers too many": ["--set", "model.depth=100000000"],
    "written-out kernel for a CNN": ["--set", "model.name=cnn", "--set", "data.name=digits", "--kernel", "written-out"],
    "compile on the autograd kernel": ["--compile", "--kernel", "autograd"],
    "dask without scheduler": ["--executor", "dask"],
    "unreachable scheduler": ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"],
    "missing data files": ["--set", "data.name=mnist", "--set", "data.path=/nonexistent"],
    "pca for a CNN": ["--set", "model.name=cnn", "--set", "data.name=digits", "--set", "data.preprocess=pca"],
    "a key the grid varies": ["--set", "model.norm=batch"],
    "malformed grid expression": ["--set", "grid.model.weight_init.std=logspace(-4, 0)"],
    "zip entries that differ": ["--set", "grid.zip=[{train.lr: 0.1}, {model.depth: 2}]"],
    "noisy BN's noise in the wrong order": [
        "--set",
        "grid.model.norm=[noisy_batch]",
        "--set",
        "model.norm_noise=[1, 0.5]",
    ],
    "noisy BN's noise as one number": ["--set", "grid.model.norm=[noisy_batch]", "--set", "model.norm_noise=[1]"],
    "a landscape scale twice": ["--set", "record.landscape_every=2", "--set", "record.landscape_scales=[1, 1]"],
    "landscape every 0 steps": ["--set", "record.landscape_every=0"],
    "dropout of 1": ["--set", "model.dropout=1"],
    "written-out kernel with dropout": ["--set", "model.dropout=0.5", "--kernel", "written-out"],
}
if not torch.cuda.is_available():
    CASES["cuda without a GPU"] = ["--device", "cuda"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_run_invocation(finished, case):
    cfg, out = finished
    before = snapshot(out)
    result = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--force", *CASES[case]])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, (case, result.output)
    assert "Traceback" not in result.output and len(lines) == 1, (case, result.output)
    assert snapshot(out) == before, case


@pytest.mark.parametrize(
    "args",
    [
        ["run", "no_such_config"],
        ["validate", "no_such_config"],
        ["summary", "/nonexistent/results"],
        ["plot", "/nonexistent/results"],
        ["check", "/nonexistent/results"],
    ],
)
def test_bad_paths(finished, args):
    _, out = finished
    before = snapshot(out)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "args",
    [
        ["summary", "--where", "nrom=batch"],
        ["summary", "--where", "norm"],
        ["plot", "--where", "norm=bogus"],
        ["plot", "--where", "seed=7"],
    ],
)
def test_bad_where(finished, args):
    _, out = finished
    before = snapshot(out)
    result = runner.invoke(app, [args[0], str(out), *args[1:]])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert snapshot(out) == before


def test_a_file_size_limit_is_one_line_and_keeps_what_was_written(finished, tmp_path):
    """A real write failure: the process may write no file larger than 2 KB (RLIMIT_FSIZE; Python ignores the
    signal, so the write fails with EFBIG), as when a disk fills up."""
    cfg, _ = finished
    out = tmp_path / "limited"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    cmd = [sys.executable, "-m", "normbench", "run", str(cfg), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "File too large" in errors[0], done.stderr
    assert (out / "tiny" / "config.yaml").is_file()  # what was written before is whole


@pytest.mark.parametrize("what", ["an immutable --out", "--force on immutable results"])
def test_results_that_cannot_be_written_are_one_line_and_untouched(finished, tmp_path, what):
    """chattr +i makes a folder unwritable even for root (permission bits are not: tests may run as root)."""
    import shutil

    cfg, out = finished
    target = tmp_path / "results"
    if what == "an immutable --out":
        target.mkdir()
        args = []
    else:
        shutil.copytree(out, target)
        args = ["--force"]
    if subprocess.run(["chattr", "-R", "+i", str(target)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        before = snapshot(target)
        result = runner.invoke(app, ["run", str(cfg), "--out", str(target), *args])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(errors) == 1 and "cannot write" in errors[0], result.output
        assert snapshot(target) == before
    finally:
        subprocess.run(["chattr", "-R", "-i", str(target)], capture_output=True)
