"""Parallel and distributed sweeps give the same results as the in-process one: local worker processes and a
real Dask cluster (a LocalCluster of worker processes on 127.0.0.1)."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import experiment_from_dict
from normbench.results import load_table
from normbench.sweep import SweepOptions, run_experiment

quiet = Console(quiet=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.conftest import TINY

    exp = experiment_from_dict({**TINY, "seeds": [1, 2], "grid": {"model.norm": ["none", "batch"]}})
    out = tmp_path_factory.mktemp("ref")
    run_experiment(exp, out, console=quiet)
    return exp, out / exp.name


def same_results(a, b) -> None:
    ra, rb = (pd.read_parquet(d / "runs.parquet").set_index("run_id").sort_index() for d in (a, b))
    assert list(ra.status) == list(rb.status) == ["ok"] * len(ra)
    pd.testing.assert_series_equal(ra.final_train_loss, rb.final_train_loss)
    for name in ("curves", "layers", "histograms"):
        ta, tb = (
            load_table(d, name).sort_values(["run_id", "step"], kind="stable").reset_index(drop=True) for d in (a, b)
        )
        pd.testing.assert_frame_equal(ta, tb, check_exact=False, rtol=1e-6)


def test_local_worker_processes_match_in_process(reference, tmp_path):
    exp, ref_dir = reference
    run_experiment(exp, tmp_path, SweepOptions(workers=2), console=quiet)
    same_results(ref_dir, tmp_path / exp.name)


def test_dask_cluster_matches_in_process(reference, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    exp, ref_dir = reference
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        run_experiment(exp, tmp_path, SweepOptions(executor="dask", scheduler=cluster.scheduler_address), console=quiet)
    same_results(ref_dir, tmp_path / exp.name)


def test_dask_without_scheduler_is_a_clear_error(tmp_path, write_config, tiny_raw):
    result = CliRunner().invoke(app, ["run", str(write_config(tiny_raw)), "--executor", "dask"])
    assert result.exit_code == 2 and "--scheduler" in result.output
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(write_config(tiny_raw)),
            "--executor",
            "dask",
            "--scheduler",
            "tcp://127.0.0.1:1",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "cannot reach a Dask scheduler" in result.output, result.output
    assert not (tmp_path / tiny_raw["name"]).exists()  # checked before anything is written


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, write_config, tiny_raw):
    result = CliRunner().invoke(app, ["run", str(write_config(tiny_raw)), "--dry-run", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert result.output.count("to train") == 8
    assert not (tmp_path / "o").exists()


def test_stacks_sent_to_workers_match_stacks_in_process(tmp_path):
    exp = experiment_from_dict(
        {
            "name": "stacks",
            "seeds": [1, 2, 3],
            "data": {"n": 100},
            "model": {"depth": 3, "width": 8, "weight_init": {"name": "normal", "std": 0.3}},
            "train": {"steps": 15},
            "record": {"loss_every": 3, "hist_every": 5},
            "grid": {"model.norm": ["none", "batch"]},
        }
    )
    run_experiment(exp, tmp_path / "a", SweepOptions(workers=1), console=quiet)
    run_experiment(exp, tmp_path / "b", SweepOptions(workers=2), console=quiet)
    same_results(tmp_path / "a" / "stacks", tmp_path / "b" / "stacks")


def test_a_dask_cluster_without_workers_ends_the_sweep_with_one_line(tmp_path, monkeypatch):
    """Every worker gone (here: none ever started): after DASK_NO_WORKER_S the sweep stops waiting, says so, and
    the results folder holds what was finished (nothing here)."""
    distributed = pytest.importorskip("dask.distributed")
    from normbench import sweep
    from normbench.config import ConfigError
    from tests.conftest import TINY

    monkeypatch.setattr(sweep, "DASK_NO_WORKER_S", 2.0)
    exp = experiment_from_dict({**TINY, "seeds": [1]})
    cluster = distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None)
    with cluster, pytest.raises(ConfigError, match="no worker for 2 s; 4 runs were not trained"):
        run_experiment(exp, tmp_path, SweepOptions(executor="dask", scheduler=cluster.scheduler_address), console=quiet)
    assert set(pd.read_parquet(tmp_path / exp.name / "runs.parquet").status) == {"missing"}
