"""The stacked engine reproduces the per-run reference engine: loss curves, divergence steps, dead and saturated
fractions, histograms. Compared where the training itself is not chaotic: plain SGD with batch norm on the
parabola amplifies float32 rounding so much that the reference differs from itself by 4% after 40 steps when
only its thread count changes (README, "Engines"); there the first steps are compared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normbench.config import load_experiment
from normbench.stacked import stack_groups, stackable, train_stacked
from normbench.train import train_run


def compare(name: str, overrides: list[str], rtol: float) -> None:
    exp = load_experiment(name, overrides)
    groups = stack_groups(exp.runs)
    assert sum(len(g) for g in groups) == len(exp.runs) and len(groups) < len(exp.runs)
    for group in groups:
        stacked = train_stacked([r.config for r in group])
        for run, s in zip(group, stacked, strict=True):
            r = train_run(run.config)
            assert (s.status, s.diverged_step, s.steps_done) == (r.status, r.diverged_step, r.steps_done), run.params
            for table in ("curves", "layers", "histograms"):
                assert len(s.tables[table]) == len(r.tables[table]), (table, run.params)
            a, b = r.tables["curves"].loss.to_numpy(), s.tables["curves"].loss.to_numpy()
            assert (np.isfinite(a) == np.isfinite(b)).all()
            np.testing.assert_allclose(b[np.isfinite(b)], a[np.isfinite(a)], rtol=rtol)
            # Dead units must agree exactly; a value-level share may differ by a few values out of thousands that
            # sit on the threshold (a ReLU input of -1e-9 in one engine and +1e-9 in the other).
            ls, lr = s.tables["layers"], r.tables["layers"]
            pd.testing.assert_series_equal(ls.dead_fraction, lr.dead_fraction, atol=1e-9)
            for col in ("saturated_fraction", "zero_fraction"):
                pd.testing.assert_series_equal(ls[col], lr[col], atol=0.02)
            ha, hb = r.tables["histograms"], s.tables["histograms"]
            assert (ha.nan == hb.nan).all() and (ha.inf == hb.inf).all()
            # Same initialization and data: at step 0 the histograms agree but for the odd value on a bin edge.
            at0 = (ha.step == 0).to_numpy()
            moved = [np.abs(np.subtract(x, y)).sum() for x, y in zip(ha.counts[at0], hb.counts[at0], strict=True)]
            assert (np.array(moved) / ha.n[at0].to_numpy()).max() <= 0.001


def test_seed_setting_same_divergence_and_first_steps():
    compare("morvan_tf23", ["train.steps=4", "record.loss_every=1", "record.hist_every=2"], rtol=5e-3)


def test_dead_neurons_first_steps():
    compare(
        "dead_neurons", ["train.lr=0.001", "train.steps=5", "record.loss_every=1", "record.hist_every=5"], rtol=5e-3
    )


def test_no_norm_runs_match_over_the_whole_run():
    compare("dead_neurons", ["grid.model.norm=[none]", "train.lr=0.001", "train.steps=40"], rtol=1e-5)


def test_adam_minibatches_shuffle_test_split_eval_mode():
    overrides = ["train.steps=40", "model.bias=auto", "train.lr=0.003", "record.loss_every=2", "record.hist_every=20"]
    compare("morvan_pt504", [*overrides, "seeds=[1, 2]", "grid.model.activation=[relu]"], rtol=1e-3)


def test_learning_rates_and_init_scales_vary_inside_a_stack():
    exp = load_experiment(
        "dead_neurons",
        ["grid.model.norm=[none]", "grid.train.lr=[0.001, 0.002]", "grid.model.weight_init.std=[0.1, 0.2]"],
    )
    groups = stack_groups(exp.runs)
    assert len(groups) == 2  # relu and tanh; lr, std and seed vary inside each
    compare("dead_neurons", ["grid.model.norm=[none]", "grid.train.lr=[0.001, 0.002]", "train.steps=30"], rtol=1e-5)


def test_what_cannot_stack_says_so():
    assert not any(stackable(r.config) for r in load_experiment("cnn_norms").runs)
    assert not any(stackable(r.config) for r in load_experiment("init_scale").runs)  # classification MLP


def test_cli_stacked_engine_runs(tmp_path):
    from typer.testing import CliRunner

    from normbench.cli import app

    result = CliRunner().invoke(
        app,
        [
            "run",
            "dead_neurons",
            "--engine",
            "stacked",
            "--set",
            "train.steps=20",
            "--set",
            "seeds=[1]",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 ok" in result.output


@pytest.mark.slow
def test_bench_runs(capsys):
    from rich.console import Console

    from normbench.bench import print_bench

    timings = print_bench(4, 20, 1, Console())
    assert len(timings) == 4 and all(t.rate > 0 for t in timings)
