"""The results folder: documented format round trip, resume without re-running, failures recorded, atomicity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from normbench import sweep
from normbench.config import experiment_from_dict
from normbench.store import ExperimentStore, load_runs, load_table
from normbench.sweep import run_experiment

DOCS = Path(__file__).parent.parent / "docs" / "results-format.md"
quiet = Console(quiet=True)


def documented_columns(table: str) -> set[str]:
    """Column names listed under '### <table>' in docs/results-format.md (first cell of each table row)."""
    text = DOCS.read_text()
    section = text.split(f"### {table}")[1].split("\n### ")[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, flags=re.M)
    return {name for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)}


@pytest.fixture
def done(tmp_path, tiny_raw):
    exp = experiment_from_dict(tiny_raw)
    table = run_experiment(exp, tmp_path, console=quiet)
    return exp, tmp_path / exp.name, table


def test_results_round_trip_and_documented_columns(done):
    exp, exp_dir, _table = done
    runs = load_runs(exp_dir)
    assert len(runs) == len(exp.runs) == 8
    assert set(runs.run_id) == {r.run_id for r in exp.runs}
    assert set(runs.status) == {"ok"}
    fixed = documented_columns("runs.parquet")
    assert set(runs.columns) == fixed | {"model.norm", "model.activation", "seed"}
    for name in ("curves", "layers", "histograms"):
        df = load_table(exp_dir, name)
        assert set(df.columns) == documented_columns(f"{name}.parquet"), name
    run_dir = exp_dir / "runs" / exp.runs[0].run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_id"] == exp.runs[0].run_id and summary["status"] == "ok"
    assert len(summary["dead_fraction"]) == 3  # one per hidden layer
    assert (run_dir / "config.yaml").is_file() and (exp_dir / "config.yaml").is_file()
    assert not list((exp_dir / "runs").glob(".tmp-*"))


def test_histogram_rows_account_for_every_value(done):
    _, exp_dir, _ = done
    h = load_table(exp_dir, "histograms")
    total = h.counts.map(sum) + h.below + h.above + h.nan + h.inf
    assert (total == h.n).all()
    assert set(h.point) == {"pre_norm", "post_norm", "post_act", "grad_pre_norm", "grad_weight"}
    assert set(h.layer) == {0, 1, 2, 3}
    assert set(h[h.point.str.startswith("grad_")].layer) == {1, 2, 3}  # hidden layers only


def test_rerun_skips_finished_runs_and_force_reruns(done, monkeypatch):
    exp, exp_dir, _ = done
    mtimes = {p: p.stat().st_mtime_ns for p in (exp_dir / "runs").glob("*/summary.json")}
    calls = []
    real = sweep.train_stack
    monkeypatch.setattr(sweep, "train_stack", lambda cfgs, *a, **kw: calls.extend(cfgs) or real(cfgs, *a, **kw))
    run_experiment(exp, exp_dir.parent, console=quiet)
    assert calls == []
    assert mtimes == {p: p.stat().st_mtime_ns for p in (exp_dir / "runs").glob("*/summary.json")}
    run_experiment(exp, exp_dir.parent, force=True, console=quiet)
    assert len(calls) == 8


def test_only_missing_runs_are_trained(tmp_path, tiny_raw):
    exp = experiment_from_dict(tiny_raw)
    store = ExperimentStore(tmp_path, exp.name)
    run_experiment(experiment_from_dict({**tiny_raw, "seeds": [1]}), tmp_path, console=quiet)
    assert sum(store.is_done(r.run_id) for r in exp.runs) == 4
    table = run_experiment(exp, tmp_path, console=quiet)
    assert len(table) == 8 and set(table.status) == {"ok"}


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_raw, monkeypatch):
    """A run that raises fails its stack; the stack's runs are trained again one by one, so that only the broken
    run is recorded failed."""
    exp = experiment_from_dict(tiny_raw)
    bad = exp.runs[2].run_id
    real = sweep.train_stack

    def flaky(cfgs, *args, **kw):
        if any(c.run_id() == bad for c in cfgs):
            raise RuntimeError("boom")
        return real(cfgs, *args, **kw)

    monkeypatch.setattr(sweep, "train_stack", flaky)
    table = run_experiment(exp, tmp_path, console=quiet).set_index("run_id")
    assert table.loc[bad, "status"] == "failed" and "boom" in table.loc[bad, "error"]
    assert (table.drop(index=bad).status == "ok").all()
    # Failed runs stay failed until asked: --retry-failed trains them again.
    monkeypatch.setattr(sweep, "train_stack", real)
    assert run_experiment(exp, tmp_path, console=quiet).set_index("run_id").loc[bad, "status"] == "failed"
    assert (
        run_experiment(exp, tmp_path, retry_failed=True, console=quiet).set_index("run_id").loc[bad, "status"] == "ok"
    )


@pytest.mark.parametrize("kind", [".tmp", ".old"])
def test_stale_temporary_run_folder_is_cleaned_and_ignored(done, kind):
    exp, exp_dir, _ = done
    stale = exp_dir / "runs" / f"{kind}-{exp.runs[0].run_id}-999999999"
    stale.mkdir()
    (stale / "summary.json").write_text("{ half written")
    run_experiment(exp, exp_dir.parent, console=quiet)
    assert not stale.exists()


def test_corrupt_summary_means_not_finished(done):
    exp, exp_dir, _ = done
    rid = exp.runs[0].run_id
    (exp_dir / "runs" / rid / "summary.json").write_text("{ broken")
    table = run_experiment(exp, exp_dir.parent, console=quiet)
    assert table.set_index("run_id").loc[rid, "status"] == "ok"


def test_diverged_run_has_step_and_null_loss(tmp_path, tiny_raw):
    tiny_raw |= {"seeds": [1], "grid": {"model.activation": ["relu"]}}
    tiny_raw["model"] |= {"weight_init": {"name": "normal", "std": 3.0}, "depth": 6}
    tiny_raw["train"] |= {"lr": 1.0}
    table = run_experiment(experiment_from_dict(tiny_raw), tmp_path, console=quiet)
    row = table.iloc[0]
    assert row.status == "diverged" and row.diverged_step >= 0
    assert pd.isna(row.final_train_loss)  # inf/NaN is not a loss to report; the status says why
    summary = json.loads(next((tmp_path / "tiny" / "runs").glob("*/summary.json")).read_text())
    assert summary["diverged_step"] == row.diverged_step and summary["final_train_loss"] is None


def test_resuming_with_another_kernel_keeps_the_runs_and_says_so(tmp_path, tiny_raw):
    """A results folder never mixes kernels silently: the finished runs are kept, their kernel named, and each
    run's kernel is in runs.parquet and the summary."""
    from io import StringIO

    exp = experiment_from_dict({**tiny_raw, "seeds": [1]})
    run_experiment(exp, tmp_path, kernel="autograd", console=quiet)
    said = StringIO()
    table = run_experiment(exp, tmp_path, console=Console(file=said, width=200))
    assert set(table["engine.kernel"]) == {"autograd"} and set(table.status) == {"ok"}
    assert "4 finished run(s) were trained by autograd" in said.getvalue()
    table = run_experiment(exp, tmp_path, force=True, console=quiet)
    assert set(table["engine.kernel"]) == {"written-out"}
    assert set(table["engine.dtype"]) == {"float32"} and set(table["engine.threads"]) == {1}


def test_runs_table_is_current_after_every_committed_run(tmp_path, tiny_raw, monkeypatch):
    """A sweep stopped after its first stacks leaves a runs.parquet that summary and plot read: the finished runs
    with their numbers, the others 'missing', and summary says how many are missing."""
    from typer.testing import CliRunner

    from normbench.cli import app

    exp = experiment_from_dict(tiny_raw)
    real, calls = sweep.train_stack, []

    def stopped_on_the_third_stack(cfgs, *args, **kw):
        calls.append(cfgs)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfgs, *args, **kw)

    monkeypatch.setattr(sweep, "train_stack", stopped_on_the_third_stack)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, tmp_path, console=quiet)
    runs = load_runs(tmp_path / exp.name)
    assert sorted(runs.status.value_counts().items()) == [("missing", 4), ("ok", 4)]
    result = CliRunner().invoke(app, ["summary", str(tmp_path / exp.name)])
    assert result.exit_code == 0 and "4 of 8 runs not finished yet" in result.output
    assert CliRunner().invoke(app, ["plot", str(tmp_path / exp.name)]).exit_code == 0


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_unusable_out_folder_is_one_line_and_writes_nothing(tmp_path, write_config, tiny_raw, where):
    from typer.testing import CliRunner

    from normbench.cli import app

    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "a file" else blocker / "results"
    result = CliRunner().invoke(app, ["run", str(write_config(tiny_raw)), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and "--out" in result.output, result.output
    assert blocker.read_text() == "not a folder"


def test_a_write_that_fails_mid_sweep_is_one_line_and_keeps_the_committed_runs(tmp_path, tiny_raw, monkeypatch):
    """The disk fills up after two runs: the error names the run and the folder, the two runs stay committed."""
    import errno

    from normbench.config import ConfigError

    exp = experiment_from_dict(tiny_raw)
    real, written = ExperimentStore.write_run, []

    def full_after_two(self, run, outcome):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(run.run_id)
        return real(self, run, outcome)

    monkeypatch.setattr(ExperimentStore, "write_run", full_after_two)
    with pytest.raises(ConfigError, match=r"No space left on device.*committed before it are kept"):
        run_experiment(exp, tmp_path, console=quiet)
    store = ExperimentStore(tmp_path, exp.name)
    assert [r.run_id for r in exp.runs if store.is_done(r.run_id)] == sorted(
        written, key=[r.run_id for r in exp.runs].index
    )
    assert sorted(load_runs(store.dir).status.value_counts().items()) == [("missing", 6), ("ok", 2)]


def test_a_damaged_run_is_found_named_and_trained_again(done):
    """One finished run's curves.parquet truncated after the fact: `check` names it and exits 1, `plot` names it in
    one line instead of a traceback, `run` trains it again, and then everything verifies."""
    from typer.testing import CliRunner

    from normbench.cli import app

    exp, exp_dir, _ = done
    victim = exp.runs[1].run_id
    path = exp_dir / "runs" / victim / "curves.parquet"
    path.write_bytes(path.read_bytes()[:100])
    runner = CliRunner()
    checked = runner.invoke(app, ["check", str(exp_dir)])
    assert checked.exit_code == 1 and victim in checked.output and "curves.parquet" in checked.output, checked.output
    plotted = runner.invoke(app, ["plot", str(exp_dir)])
    assert plotted.exit_code == 2 and "Traceback" not in plotted.output and victim in plotted.output
    said = __import__("io").StringIO()
    table = run_experiment(exp, exp_dir.parent, console=Console(file=said, width=200))
    assert "1 to train" in said.getvalue() and "damaged files" in said.getvalue()
    assert set(table.status) == {"ok"}
    assert runner.invoke(app, ["check", str(exp_dir)]).exit_code == 0
