"""The tutorial's demonstration, qualitatively, on the packaged configs (one seed each, to stay fast).

The full demo (three seeds, figures, verdicts) is `normbench demo dead-neurons`; tests marked slow run it whole.
"""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import load_experiment
from normbench.demo import ALIVE, DEAD, SATURATED, UNSATURATED, cell_stats, judge
from normbench.sweep import run_experiment

quiet = Console(quiet=True)


@pytest.fixture(scope="module")
def tf23(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf23")
    run_experiment(load_experiment("morvan_tf23", ["seeds=[1]"]), out, console=quiet)
    return out / "morvan_tf23"


@pytest.fixture(scope="module")
def dead(tmp_path_factory):
    out = tmp_path_factory.mktemp("dead")
    run_experiment(load_experiment("dead_neurons", ["seeds=[1]"]), out, console=quiet)
    return out / "dead_neurons"


def cells(exp_dir):
    return {(r.activation, r.norm): r for r in cell_stats(exp_dir).itertuples()}


def test_seed_relu_setting_diverges_rather_than_dies(tf23):
    c = cells(tf23)
    assert c["relu", "none"].diverged == 1 and c["relu", "none"].diverged_steps == [1]
    assert any("DIVERGES rather than dies" in line for line in judge(tf23))


def test_bn_keeps_relu_alive_and_trains(tf23):
    r = cells(tf23)["relu", "batch"]
    assert r.diverged == 0 and r.dead < ALIVE and r.final_loss < 100


def test_tanh_without_bn_saturates_with_bn_does_not(tf23):
    c = cells(tf23)
    assert c["tanh", "none"].saturated > SATURATED
    assert c["tanh", "batch"].saturated < UNSATURATED
    assert c["tanh", "batch"].final_loss < c["tanh", "none"].final_loss / 3


def test_relu_units_really_die_without_bn_and_live_with_it(dead):
    c = cells(dead)
    assert c["relu", "none"].dead > DEAD and c["relu", "none"].dead_max_layer == 1.0
    assert c["relu", "batch"].dead < ALIVE
    assert c["relu", "batch"].final_loss < c["relu", "none"].final_loss / 3
    assert any("claim reproduced" in line for line in judge(dead))


@pytest.mark.slow
def test_full_demo(tmp_path):
    result = CliRunner().invoke(app, ["demo", "dead-neurons", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "DIVERGES rather than dies" in result.output
    for name in ("morvan_tf23", "morvan_pt504", "dead_neurons"):
        assert (tmp_path / name / "figures" / "cost.png").is_file()
