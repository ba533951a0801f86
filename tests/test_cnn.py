"""The CNN path end to end: digits, every recorded point per channel, classification curves, figures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import experiment_from_dict
from normbench.data import build_dataset
from normbench.engine import total_steps, train_run
from normbench.results import load_table

TINY_CNN = {
    "name": "tiny_cnn",
    "seeds": [1],
    "data": {"name": "digits", "n": 200, "n_test": 100, "shuffle": True},
    "model": {"name": "cnn", "channels": [4, 8], "weight_init": "kaiming", "norm_groups": 2},
    "train": {"optimizer": "momentum", "lr": 0.05, "batch_size": 25, "epochs": 2},
    "record": {"loss_every": 4, "hist_every": 8, "eval_split": "test", "eval_mode": "eval"},
    "grid": {"model.norm": ["batch", "switchable"], "model.activation": ["relu", "tanh"]},
}


def test_cnn_run_records_channels_accuracy_and_importance(tmp_path, write_config):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(write_config(TINY_CNN)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    exp_dir = out / "tiny_cnn"
    curves = load_table(exp_dir, "curves")
    assert curves.accuracy.between(0, 1).all()
    assert curves.step.max() == 16  # 2 epochs x 200 / 25
    layers = load_table(exp_dir, "layers")
    assert set(layers.layer) == {1, 2}
    sn = layers[layers.sn_mean_bn.notna()]
    assert len(sn) and ((sn.sn_mean_in + sn.sn_mean_ln + sn.sn_mean_bn - 1).abs() < 1e-6).all()
    hists = load_table(exp_dir, "histograms")
    layer1 = hists[(hists.layer == 1) & (hists.point == "post_act")]
    assert (layer1.n == 100 * 4 * 8 * 8).all()  # every position of every test image, conv before pooling
    records = json.loads(CliRunner().invoke(app, ["summary", str(exp_dir), "--format", "json"]).stdout)
    assert all(0 <= r["final_test_accuracy"] <= 1 for r in records)
    plotted = CliRunner().invoke(app, ["plot", str(exp_dir)])
    assert plotted.exit_code == 0, plotted.output


def test_batch_manual_trains_exactly_like_batch():
    raw = {**TINY_CNN, "grid": {"model.norm": ["batch", "batch_manual"]}}
    a, b = (train_run(r.config).tables["curves"] for r in experiment_from_dict(raw).runs)
    assert a.loss.tolist() == pytest.approx(b.loss.tolist(), rel=1e-4, abs=1e-6)


def test_epochs_and_linear_lr_scaling():
    raw = {**TINY_CNN, "grid": {"train.batch_size": [10, 50]}}
    raw["train"] = {**TINY_CNN["train"], "lr": 0.1, "lr_batch": 50}
    runs = experiment_from_dict(raw).runs
    data = build_dataset(runs[0].config.data)
    assert [total_steps(r.config, data) for r in runs] == [40, 8]
    assert [r.config.train.effective_lr() for r in runs] == pytest.approx([0.02, 0.1])


def test_final_vs_numeric_key_figure(tmp_path):
    from rich.console import Console

    from normbench.sweep import run_experiment

    raw = {**TINY_CNN, "grid": {"model.norm": ["batch", "group"], "train.batch_size": [5, 10, 20]}}
    raw["train"] = {**TINY_CNN["train"], "epochs": 1}
    run_experiment(experiment_from_dict(raw), tmp_path, console=Console(quiet=True))
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "tiny_cnn")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny_cnn" / "figures" / "final_vs_batch_size.png").is_file()
