"""The results folder: documented format round trip, resume without re-running, failures recorded, atomicity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from normbench import sweep
from normbench.config import experiment_from_dict
from normbench.results import load_runs, load_table
from normbench.store import ExperimentStore
from normbench.sweep import SweepOptions, run_experiment
from tests.conftest import snapshot

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
    run_experiment(exp, exp_dir.parent, SweepOptions(force=True), console=quiet)
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
        run_experiment(exp, tmp_path, SweepOptions(retry_failed=True), console=quiet)
        .set_index("run_id")
        .loc[bad, "status"]
        == "ok"
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
    run_experiment(exp, tmp_path, SweepOptions(kernel="autograd"), console=quiet)
    said = StringIO()
    table = run_experiment(exp, tmp_path, console=Console(file=said, width=200))
    assert set(table["engine.kernel"]) == {"autograd"} and set(table.status) == {"ok"}
    assert "4 finished run(s) were trained by autograd" in said.getvalue()
    table = run_experiment(exp, tmp_path, SweepOptions(force=True), console=quiet)
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


# -- a folder keeps what it holds: the same runs, a grid that extends it, one within it, one that would drop runs ----


def cli(*args: str):
    from typer.testing import CliRunner

    from normbench.cli import app

    return CliRunner().invoke(app, list(args))


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def folder(tmp_path, write_config, tiny_raw):
    """The tiny config with seeds [1, 2] trained into tmp_path/results/tiny through the CLI: (config, results)."""
    cfg = str(write_config(tiny_raw))
    out = tmp_path / "results"
    assert cli("run", cfg, "--out", str(out)).exit_code == 0
    return cfg, out


def listed(out: Path) -> set[str]:
    return set(pd.read_parquet(out / "tiny" / "runs.parquet").run_id)


def summary_times(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "tiny" / "runs").glob("*/summary.json")}


def test_the_same_grid_resumes_as_before(folder):
    cfg, out = folder
    before, times = listed(out), summary_times(out)
    result = cli("run", cfg, "--out", str(out))
    assert result.exit_code == 0 and "8 already finished" in result.output, result.output
    assert "extends" not in result.output and "within" not in result.output
    assert listed(out) == before and summary_times(out) == times


def test_a_grid_that_extends_the_folders_becomes_its_config_and_keeps_its_runs(folder):
    cfg, out = folder
    before, times = listed(out), summary_times(out)
    result = cli("run", cfg, "--out", str(out), "--set", "seeds=range(1, 6)")
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "extends its grid" in line]
    assert said == [
        f"{out / 'tiny'}: extends its grid from 8 to 20 runs (seeds [1, 2] -> [1..5]); its 8 finished runs are kept"
    ], result.stderr
    assert len(listed(out)) == 20 and before <= listed(out)
    assert {k: v for k, v in summary_times(out).items() if k in before} == times  # not trained again
    assert yaml.safe_load((out / "tiny" / "config.yaml").read_text())["seeds"] == [1, 2, 3, 4, 5]
    assert len(json.loads(cli("summary", str(out), "--format", "json").stdout)) == 20


def test_a_grid_within_the_folders_trains_what_is_missing_and_keeps_the_folder(folder):
    """A grid within the folder's (one seed, one norm): its missing run is trained; config.yaml stays byte for
    byte, runs.parquet lists all of the folder's runs, and summary shows them all."""
    import shutil

    cfg, out = folder
    exp_dir = out / "tiny"
    config_before, before = (exp_dir / "config.yaml").read_bytes(), listed(out)
    table = pd.read_parquet(exp_dir / "runs.parquet")
    gone = table[(table.seed == 2) & (table["model.norm"] == "batch")].run_id.iloc[0]
    shutil.rmtree(exp_dir / "runs" / gone)  # one run of the smaller grid is missing
    times = summary_times(out)
    result = cli("run", cfg, "--out", str(out), "--set", "seeds=[2]", "--set", "grid.model.norm=[batch]")
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "within its grid" in line]
    assert said == [
        f"{exp_dir}: the 2 runs asked for are within its grid of 8 (seeds [1, 2] -> [2]; grid.model.norm "
        "[none, batch] -> [batch]); its config.yaml is kept and runs.parquet lists all 8"
    ], result.stderr
    assert "1 to train" in result.stderr and "done: 2 ok" in result.stderr
    assert (exp_dir / "config.yaml").read_bytes() == config_before
    assert listed(out) == before and set(pd.read_parquet(exp_dir / "runs.parquet").status) == {"ok"}
    assert {k: v for k, v in summary_times(out).items() if k != gone} == times
    assert gone in summary_times(out)
    records = json.loads(cli("summary", str(out), "--format", "json").stdout)
    assert len(records) == 8 and {r["seed"] for r in records} == {1, 2}


@pytest.mark.parametrize(
    ("sets", "changes", "dropped"),
    [
        (["--set", "train.lr=0.01"], "train.lr 0.001 -> 0.01", 8),
        (["--set", "seeds=[2, 3]"], "seeds [1, 2] -> [2, 3]", 4),
        (["--set", "grid.model.norm=[batch, layer]", "--set", "model.width=12"], "model.width 8 -> 12", 8),
    ],
)
@pytest.mark.parametrize("dry", [False, True])
def test_a_grid_that_would_drop_runs_is_refused_and_changes_nothing(folder, sets, changes, dropped, dry):
    cfg, out = folder
    before = snapshot(out)
    result = cli("run", cfg, "--out", str(out), *sets, *(["--dry-run"] if dry else []))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert lines_of(result.output) == lines_of(result.stderr) and len(lines_of(result.output)) == 1, result.output
    line = result.output.strip()
    assert line.startswith(f"error: {out / 'tiny'}: this config would no longer list {dropped} of the folder's 8 runs")
    assert changes in line and "--set name=NEW" in line and "--out OTHER" in line, line
    assert snapshot(out) == before
    # its own folder, as the line says
    assert cli("run", cfg, "--out", str(out), *sets, "--set", "name=tiny2", "--dry-run").exit_code == 0


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        ([], "tiny: the same 8 runs as the folder lists"),
        (["--set", "seeds=[1, 2, 3]"], "tiny: extends its grid from 8 to 12 runs"),
        (["--set", "seeds=[1]"], "tiny: the 4 runs asked for are within its grid of 8"),
        (["--set", "name=other"], "other: a new experiment folder"),
    ],
)
def test_a_dry_run_says_what_the_run_would_do_to_the_folder(folder, sets, says):
    cfg, out = folder
    before = snapshot(out)
    result = cli("run", cfg, "--out", str(out), *sets, "--dry-run")
    assert result.exit_code == 0 and says in result.stderr, result.output
    assert snapshot(out) == before


def test_the_demo_refuses_a_folder_it_would_hide_runs_of(tmp_path):
    """`demo` (like `claims`) writes through run_experiment: the same rule, one line, nothing changed."""
    from normbench.config import load_experiment

    out = tmp_path / "results"
    exp = load_experiment("morvan_tf23", ["train.lr=0.5"])  # the folder as a run with another lr left it
    store = ExperimentStore(out, exp.name)
    store.prepare(exp)
    store.write_runs_table(exp)
    before = snapshot(out)
    result = cli("demo", "dead-neurons", "--out", str(out))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]  # after its progress line
    assert len(errors) == 1 and "train.lr 0.5 -> 0.001" in errors[0], result.output
    assert snapshot(out) == before


def test_run_folders_runs_parquet_does_not_list_are_named_by_every_reading_command(tmp_path, write_config, tiny_raw):
    """runs/ holding run folders of another grid (as an earlier config or normbench version left them): summary,
    plot, report and check show what runs.parquet lists and say in one line how many more there are."""
    import shutil

    cfg = str(write_config({**tiny_raw, "seeds": [1]}))
    out, other = tmp_path / "results", tmp_path / "other"
    assert cli("run", cfg, "--out", str(out)).exit_code == 0
    assert cli("run", cfg, "--out", str(other), "--set", "seeds=[2]").exit_code == 0
    for run_dir in (other / "tiny" / "runs").iterdir():
        shutil.copytree(run_dir, out / "tiny" / "runs" / run_dir.name)
    note = f"{out / 'tiny'}: 4 more run folders in runs/ are not listed in runs.parquet"
    for args in (["summary", str(out)], ["plot", str(out)], ["report", str(out / "tiny")]):
        result = cli(*args)
        assert result.exit_code == 0 and [line for line in result.stderr.splitlines() if note in line], result.output
    assert len(json.loads(cli("summary", str(out), "--format", "json").stdout)) == 4
    checked = cli("check", str(out))
    assert checked.exit_code == 0 and "8 run folders" in checked.stdout, checked.output
    assert "4 of these run folders are not listed in runs.parquet" in checked.stderr, checked.output
    # A run whose grid includes them lists them again.
    assert cli("run", cfg, "--out", str(out), "--set", "seeds=[1, 2]").exit_code == 0
    assert "not listed" not in cli("summary", str(out)).stderr


def test_the_results_format_is_written_with_every_run_and_folder(done):
    """summary.json and runs.parquet's schema metadata carry the format; the columns each table requires are the
    documented ones; the documentation's table of versions names this one."""
    import pyarrow.parquet as pq

    from normbench import __version__
    from normbench.results import COLUMNS, RESULTS_FORMAT

    exp, exp_dir, _ = done
    meta = pq.read_schema(exp_dir / "runs.parquet").metadata
    assert meta[b"normbench.results_format"] == str(RESULTS_FORMAT).encode()
    assert meta[b"normbench.version"] == __version__.encode()
    for run in exp.runs:
        assert json.loads((exp_dir / "runs" / run.run_id / "summary.json").read_text())["results_format"] == 1
    assert set(COLUMNS["runs"]) == documented_columns("runs.parquet")
    for name in ("curves", "layers", "histograms", "landscape"):
        assert set(COLUMNS[name]) == documented_columns(f"{name}.parquet"), name
    pyproject = (DOCS.parent.parent / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in pyproject and __version__ == "0.2.0"
    assert f"| {RESULTS_FORMAT} | normbench 0.2.0 and later |" in DOCS.read_text()
