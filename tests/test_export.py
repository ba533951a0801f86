"""`normbench export --tensorboard`: the event files, read back with TensorBoard's own reader, hold the numbers of
the results tables."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from tensorboard.backend.event_processing import event_accumulator as ea  # the dev extra installs tensorboard
from typer.testing import CliRunner

from normbench import sweep
from normbench.cli import app
from normbench.config import experiment_from_dict
from normbench.finals import applicable, per_run
from normbench.results import load_runs, load_table
from normbench.store import ExperimentStore
from normbench.sweep import run_experiment
from normbench.views.export import INSTALL_HINT, histogram_buckets, run_labels
from normbench.views.summary import landscape_summary

from .conftest import TINY

runner = CliRunner()
quiet = Console(quiet=True)

# Regression: two runs diverge (lr 1.0: inf values in the histograms, values far outside the ranges), one fails.
QUAD = copy.deepcopy(TINY) | {"seeds": [1], "grid": {"model.norm": ["none", "batch"], "train.lr": [0.001, 1.0]}}
# Classification: accuracy curves.
DIGITS = {
    "name": "digits",
    "seeds": [1],
    "data": {"name": "digits", "n": 100, "n_test": 50},
    "model": {"depth": 2, "width": 8, "weight_init": "kaiming", "norm": "batch"},
    "train": {"optimizer": "sgd", "lr": 0.05, "steps": 6, "batch_size": 25},
    "record": {"loss_every": 3, "hist_every": 3, "bins": 8, "landscape_every": 2, "running_stats": True},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder with two experiments: `tiny` (ok, diverged, failed and not-yet-trained runs) and `digits`."""
    out = tmp_path_factory.mktemp("results")
    exp = experiment_from_dict(QUAD)
    bad = next(r.run_id for r in exp.runs if r.params == {"model.norm": "batch", "train.lr": 0.001, "seed": 1})
    real = sweep.train_stack

    def flaky(cfgs, *args, **kw):
        if any(c.run_id() == bad for c in cfgs):
            raise RuntimeError("boom")
        return real(cfgs, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "train_stack", flaky)
        statuses = run_experiment(exp, out, console=quiet).status.tolist()
    assert sorted(statuses) == ["diverged", "diverged", "failed", "ok"]
    # A grid grown by one value: its runs are `missing` in runs.parquet.
    grown = copy.deepcopy(QUAD)
    grown["grid"]["train.lr"].append(0.01)
    ExperimentStore(out, "tiny").write_runs_table(experiment_from_dict(grown))
    assert (run_experiment(experiment_from_dict(DIGITS), out, console=quiet).status == "ok").all()
    return out


def export(results: Path, logdir: Path) -> str:
    result = runner.invoke(app, ["export", str(results), "--tensorboard", "--out", str(logdir)])
    assert result.exit_code == 0, result.output
    return result.output


def read(run_dir: Path) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def as_float32(values) -> np.ndarray:
    """TensorBoard stores scalars as float32: what it gives back is the stored float64 rounded to float32 (beyond
    float32's range: inf), exactly."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)


def assert_scalars(acc: ea.EventAccumulator, tag: str, steps, values) -> None:
    events = acc.Scalars(tag)
    assert [e.step for e in events] == [int(s) for s in steps], tag
    np.testing.assert_array_equal(np.array([e.value for e in events]), as_float32(values), err_msg=tag)


def run_dirs(logdir: Path, exp: str) -> dict[str, Path]:
    """run_id -> its TensorBoard run folder, found by the run id in its status text."""
    found = {}
    for d in (logdir / exp).iterdir():
        text = read(d).Tensors("run/text_summary")[0].tensor_proto.string_val[0].decode()
        rid = text.split("**run id**: ")[1].split()[0]
        found[rid] = d
    return found


def test_export_holds_the_tables_numbers(results, tmp_path):
    logdir = tmp_path / "tb"
    output = export(results, logdir)
    assert "tiny: 3 runs, 1 failed (status text only), 2 not trained yet" in output
    assert f"tensorboard --logdir {logdir}" in output
    assert sorted(p.name for p in logdir.iterdir()) == ["digits", "tiny"]
    hists = load_table(results / "tiny", "histograms")  # the diverged runs: what the edge buckets are for
    assert (hists.below > 0).any() and (hists.above > 0).any() and (hists.inf > 0).any()

    for exp in ("tiny", "digits"):
        runs = load_runs(results / exp)
        dirs = run_dirs(logdir, exp)
        assert set(dirs) == set(runs.run_id[runs.status != "missing"])
        if exp == "tiny":
            assert "norm=none,lr=1.0,seed=1" in {d.name for d in dirs.values()}
        for run in runs[runs.status != "missing"].itertuples():
            acc = read(dirs[run.run_id])
            text = acc.Tensors("run/text_summary")[0].tensor_proto.string_val[0].decode()
            assert f"**status**: {run.status}" in text
            if run.status == "failed":
                assert "boom" in text
                assert acc.Tags()["scalars"] == [] and acc.Tags()["histograms"] == []
                continue
            if run.status == "diverged":
                assert f"diverged at step {run.diverged_step}" in text
            expected_scalars: set[str] = set()

            curves = load_table(results / exp, "curves", [run.run_id])
            for (split, mode), g in curves.groupby(["split", "mode"]):
                for metric in ("loss", "accuracy"):
                    tag = f"{metric}/{split}/{mode}_mode"
                    if g[metric].notna().any():  # accuracy in regression: NaN throughout, left out
                        assert_scalars(acc, tag, g.step, g[metric])
                        expected_scalars.add(tag)
            assert ("accuracy/test/eval_mode" in expected_scalars) == (exp == "digits")

            layers = load_table(results / exp, "layers", [run.run_id])
            stats = [c for c in layers.columns if c not in ("run_id", "step", "layer") and layers[c].notna().any()]
            assert {"dead_fraction", "zero_fraction", "grad_norm", "weight_norm"} <= set(stats)
            for layer, g in layers.groupby("layer"):
                for col in stats:
                    assert_scalars(acc, f"{col}/layer{layer}", g.step, g[col])
                    expected_scalars.add(f"{col}/layer{layer}")

            hists = load_table(results / exp, "histograms", [run.run_id])
            expected_hists = set()
            for (point, layer), g in hists.groupby(["point", "layer"]):
                tag = f"{point}/layer{layer}"
                expected_hists.add(tag)
                events = acc.Histograms(tag)
                assert [e.step for e in events] == g.step.tolist()
                for ev, h in zip(events, g.to_dict("records"), strict=True):
                    hv = ev.histogram_value
                    counts = np.asarray(h["counts"])
                    # Every finite value is in a bucket: the stored bins, and those outside the range at the edges.
                    assert sum(hv.bucket) == counts.sum() + h["below"] + h["above"] == hv.num
                    first = 1 if h["below"] else 0
                    assert hv.bucket[first : first + len(counts)] == counts.tolist()
                    edges = np.linspace(h["lo"], h["hi"], len(counts) + 1)
                    assert hv.bucket_limit[first : first + len(counts)] == edges[1:].tolist()  # right edges
                    if h["below"]:
                        assert hv.bucket[0] == h["below"] and hv.bucket_limit[0] == h["lo"] and hv.min == h["min"]
                    if h["above"]:
                        assert hv.bucket[-1] == h["above"] and hv.bucket_limit[-1] == hv.max == h["max"]
                for stat, values in (
                    ("nan", g.nan),
                    ("inf", g.inf),
                    ("out_of_range_share", (g.below + g.above) / g.n),
                    ("mean", g["mean"]),
                    ("std", g["std"]),
                ):
                    assert_scalars(acc, f"{point}/{stat}/layer{layer}", g.step, values)
                    expected_scalars.add(f"{point}/{stat}/layer{layer}")
            landscape = load_table(results / exp, "landscape", [run.run_id])
            assert landscape.empty == (exp == "tiny")
            if not landscape.empty:
                summary = landscape_summary(landscape)
                for col in ("loss_range", "grad_change", "beta"):
                    assert_scalars(acc, f"landscape/{col}", summary.step, summary[col])
                    expected_scalars.add(f"landscape/{col}")
            # The final numbers as every command reads them (finals.per_run), at the last step.
            finals = per_run(runs).loc[run.Index]
            for name in applicable(per_run(runs)):
                if not np.isnan(finals[name]):
                    assert_scalars(acc, f"final/{name}", [run.steps_done], [finals[name]])
                    expected_scalars.add(f"final/{name}")
            assert "final/final_train_loss" in expected_scalars
            # Every point of the table, whatever its name, and nothing else.
            assert set(acc.Tags()["histograms"]) == expected_hists
            assert set(acc.Tags()["scalars"]) == expected_scalars


def test_export_again_replaces_and_never_touches_results(results, tmp_path):
    logdir = tmp_path / "tb"
    export(results / "tiny", logdir)
    (logdir / "tiny" / "norm=none,lr=1.0,seed=1").rename(logdir / "tiny" / "stale")  # as from an older grid
    (logdir / ".tmp-tiny-999999999").mkdir()  # as left by a killed export
    export(results / "tiny", logdir)
    folders = sorted((logdir / "tiny").iterdir())
    assert "stale" not in {d.name for d in folders} and len(folders) == 4
    assert all(len(list(d.iterdir())) == 1 for d in folders)  # one event file each: curves never doubled
    assert not [p for p in logdir.iterdir() if p.name.startswith(".")]

    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["export", str(results / "tiny"), "--tensorboard", "--out", str(results)])
    assert result.exit_code == 2 and "holds files other than TensorBoard event files" in result.output
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before


def test_without_tensorboard_one_line_and_exit_2(results, monkeypatch, tmp_path):
    for name in [
        m for m in sys.modules if m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorboard"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    result = runner.invoke(app, ["export", str(results), "--tensorboard", "--out", str(tmp_path / "tb")])
    assert result.exit_code == 2
    assert result.output == f"error: {INSTALL_HINT}\n"
    assert "pip install 'normbench[tensorboard]'" in result.output
    assert not (tmp_path / "tb").exists()


def test_buckets_of_values_outside_the_range():
    row = {"counts": [1, 2, 3, 4], "lo": -1.0, "hi": 1.0, "below": 5, "above": 6, "min": -30.0, "max": 40.0}
    limits, counts, low, high = histogram_buckets(row)
    assert limits.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0, 40.0] and counts.tolist() == [5, 1, 2, 3, 4, 6]
    assert (low, high) == (-30.0, 40.0)  # TensorBoard draws the first bucket from min, the last to max
    inside = row | {"below": 0, "above": 0, "min": -0.25, "max": 0.75}
    limits, counts, low, high = histogram_buckets(inside)
    assert limits.tolist() == [-0.5, 0.0, 0.5, 1.0] and counts.tolist() == [1, 2, 3, 4] and (low, high) == (-0.25, 0.75)
    empty = row | {"counts": [0, 0, 0, 0], "below": 0, "above": 0, "min": math.nan, "max": math.nan}
    assert histogram_buckets(empty)[2:] == (-1.0, 1.0)  # only NaN/inf values: no bucket holds anything


def test_export_needs_a_format_and_results(tmp_path):
    for args, message in (
        (["export", str(tmp_path)], "--tensorboard"),
        (["export", str(tmp_path / "none"), "--tensorboard"], "no such results folder"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_run_labels_are_grid_values_and_unique_file_names():
    runs = pd.DataFrame({"run_id": ["a1", "b2"], "model.norm": ["batch", "batch"], "data.path": ["/x y", "/x y"]})
    assert run_labels(runs, ["model.norm", "data.path"]) == {
        "a1": "norm=batch,path=_x_y_a1",
        "b2": "norm=batch,path=_x_y_b2",
    }
    runs = pd.DataFrame({"run_id": ["a1"], "model.std": [0.1], "data.std": [2]})
    assert run_labels(runs, ["model.std", "data.std"]) == {"a1": "model.std=0.1,data.std=2"}
    assert run_labels(runs, []) == {"a1": "a1"}
