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
from tests.conftest import finished_sweep, snapshot

runner = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder with a finished tiny sweep in it, and its config file."""
    return finished_sweep(tmp_path_factory.mktemp("bad"))


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


# -- results of another format: one line from every command that reads them, nothing changed ---------------------


def age(exp_dir: Path) -> None:
    """Make a finished experiment folder what normbench 0.1 wrote (results format 0): no format in summary.json
    or runs.parquet, histograms without the nan and inf columns (their checksums as written)."""
    import json

    import pandas as pd

    for run_dir in (exp_dir / "runs").iterdir():
        summary = json.loads((run_dir / "summary.json").read_text())
        del summary["results_format"]
        hists = run_dir / "histograms.parquet"
        pd.read_parquet(hists).drop(columns=["nan", "inf"]).to_parquet(hists, index=False)
        data = hists.read_bytes()
        summary["files"]["histograms.parquet"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    pd.read_parquet(exp_dir / "runs.parquet").to_parquet(exp_dir / "runs.parquet", index=False)


@pytest.fixture
def older(finished, tmp_path):
    """A copy of the finished folder as an older normbench left it: (config, results folder)."""
    import shutil

    cfg, out = finished
    target = tmp_path / "results"
    shutil.copytree(out, target)
    age(target / "tiny")
    return cfg, target


READERS = {
    "summary": lambda cfg, out: ["summary", str(out)],
    "summary --by": lambda cfg, out: ["summary", str(out / "tiny"), "--by", "norm"],
    "summary --where": lambda cfg, out: ["summary", str(out), "--where", "norm=batch"],
    "plot": lambda cfg, out: ["plot", str(out)],
    "report": lambda cfg, out: ["report", str(out / "tiny")],
    "export": lambda cfg, out: ["export", str(out), "--tensorboard", "--out", str(out / "tb")],
    "check": lambda cfg, out: ["check", str(out)],
    "run": lambda cfg, out: ["run", str(cfg), "--out", str(out)],
    "run --dry-run": lambda cfg, out: ["run", str(cfg), "--out", str(out), "--dry-run"],
    "run of another grid": lambda cfg, out: ["run", str(cfg), "--out", str(out), "--set", "seeds=[1, 2]"],
}


@pytest.mark.parametrize("command", sorted(READERS))
def test_results_of_an_older_format_are_one_line_and_untouched(older, command):
    cfg, out = older
    before = snapshot(out)
    result = runner.invoke(app, READERS[command](cfg, out))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.output, (command, result.output)
    assert len(lines) == 1 and lines == [line for line in result.stderr.splitlines() if line.strip()], result.output
    assert f"{out / 'tiny'} is in results format 0 (written by normbench 0.1.x or earlier)" in lines[0], lines[0]
    assert "reads format 1 only" in lines[0] and "--force" in lines[0], lines[0]
    assert snapshot(out) == before


def test_the_advised_command_retrains_an_older_folder_into_this_format(older):
    """What the line says to type works: `normbench run DIR/config.yaml --out OUT --force` retrains every run,
    and then every command reads the folder."""
    import re
    import shlex

    _, out = older
    line = runner.invoke(app, ["summary", str(out)]).output
    advised = shlex.split(re.search(r"`(normbench run [^`]+)`", line)[1])
    result = runner.invoke(app, advised[1:])
    assert result.exit_code == 0, result.output
    assert "results format 0 -> 1 (--force): every run of the grid is trained again" in result.stderr
    assert "4 to train" in result.stderr
    for args in (["summary", str(out)], ["check", str(out)], ["plot", str(out)]):
        assert runner.invoke(app, args).exit_code == 0, args
    assert (out / "tiny" / "config.yaml").read_text().startswith(f"# resolved from {older[0]}\n")


@pytest.mark.parametrize("command", ["plot", "report", "export", "check"])
def test_a_table_without_a_required_column_is_one_line_naming_it(finished, tmp_path, command):
    """A run of this format whose histograms.parquet lacks nan and inf (checksums matching): the commands that
    read it name the run, the table and the columns in one line."""
    import json
    import shutil

    import pandas as pd

    cfg, out = finished
    target = tmp_path / "results"
    shutil.copytree(out, target)
    run_dir = sorted(p for p in (target / "tiny" / "runs").iterdir())[0]
    hists = run_dir / "histograms.parquet"
    pd.read_parquet(hists).drop(columns=["nan", "inf"]).to_parquet(hists, index=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    data = hists.read_bytes()
    summary["files"]["histograms.parquet"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    before = snapshot(target)
    result = runner.invoke(app, READERS[command](cfg, target))
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    said = [line for line in result.output.splitlines() if run_dir.name in line]
    assert len(said) == 1 and "histograms.parquet lacks" in said[0] and "nan, inf" in said[0], result.output
    if command != "check":
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert snapshot(target) == before


def test_the_demo_and_claims_refuse_an_older_folder_in_one_line(older, tmp_path):
    """`demo` and `claims` write through run_experiment: an older folder of one of their experiments is refused
    with the same line, before anything is written."""
    import shutil

    _, out = older
    for name in ("morvan_tf23", "dead_neurons"):
        shutil.copytree(out / "tiny", out / name)
    shutil.rmtree(out / "tiny")
    before = snapshot(out)
    demo = ["demo", "dead-neurons", "--out", str(out)]
    claims = ["claims", "--only", "relu-dies-without-bn", "--out", str(out)]
    for args in (demo, claims):
        result = runner.invoke(app, args)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert len(errors) == 1 and "is in results format 0" in errors[0], (args, result.output)
        assert snapshot(out) == before, args


def test_a_run_of_an_older_format_in_a_current_folder_is_named_and_trained_again(finished, tmp_path):
    """One listed run whose summary.json has no format (as normbench 0.1 wrote it): check names it (exit 1), plot
    is one line naming it, and run trains that run again (and says why)."""
    import json
    import shutil

    cfg, out = finished
    target = tmp_path / "results"
    shutil.copytree(out, target)
    run_dir = sorted((target / "tiny" / "runs").iterdir())[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["results_format"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    before = snapshot(target)
    checked = runner.invoke(app, ["check", str(target)])
    assert checked.exit_code == 1 and f"{run_dir.name} (ok): results format 0" in checked.output, checked.output
    plotted = runner.invoke(app, ["plot", str(target)])
    lines = [line for line in plotted.output.splitlines() if line.strip()]
    assert plotted.exit_code == 2 and len(lines) == 1 and f"run {run_dir.name} of" in lines[0], plotted.output
    assert "is in results format 0" in lines[0] and snapshot(target) == before
    result = runner.invoke(app, ["run", str(cfg), "--out", str(target)])
    assert result.exit_code == 0 and "1 to train" in result.stderr, result.output
    assert "1 of them finished in another results format" in " ".join(result.stderr.split())
    assert runner.invoke(app, ["check", str(target)]).exit_code == 0
