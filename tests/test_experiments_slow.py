"""The packaged experiments of README's "beyond the demo", run whole (marked slow: about 4 minutes on 2 cores).
Each asserts the outcome README reports, so a change that alters it fails here, not silently in the docs."""

from __future__ import annotations

import pytest
from rich.console import Console

from normbench.config import load_experiment
from normbench.results import load_runs
from normbench.sweep import run_experiment
from normbench.views.render import plot_experiment

pytestmark = pytest.mark.slow


def run(name, tmp_path):
    run_experiment(load_experiment(name), tmp_path, console=Console(quiet=True))
    exp_dir = tmp_path / name
    assert plot_experiment(exp_dir)
    runs = load_runs(exp_dir)
    assert set(runs.status) == {"ok"}
    return runs


def test_cnn_norms_every_norm_beats_none(tmp_path):
    runs = run("cnn_norms", tmp_path)
    loss = runs.groupby(["model.activation", "model.norm"]).final_train_loss.mean()
    for act in ("relu", "tanh"):
        others = loss[act].drop("none")
        assert (others < loss[act]["none"]).all(), loss[act]
    # the hand-written backward trains exactly like PyTorch's batch norm
    assert loss["relu"]["batch_manual"] == pytest.approx(loss["relu"]["batch"], rel=1e-3)


def test_batch_size_every_norm_stays_above_93_percent(tmp_path):
    runs = run("batch_size", tmp_path)
    acc = runs.groupby(["model.norm", "train.batch_size"]).final_test_accuracy.mean()
    assert (acc > 0.93).all(), acc  # no BN collapse at batch 2 at this scale (README says so)


def test_init_scale_bn_trains_over_a_wider_band(tmp_path):
    runs = run("init_scale", tmp_path)
    acc = runs.groupby(["model.norm", "model.weight_init.std"]).final_test_accuracy.mean()
    good = (acc > 0.8).groupby(level=0).sum()
    assert good["batch"] >= 5 and good["none"] <= 2, acc
