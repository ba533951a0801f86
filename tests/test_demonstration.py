"""The tutorial's demonstration: its outcomes on the packaged configs with one seed (fast), and the whole demo under
both kernels against the numbers and verdicts the README states (marked slow).

The demo judges nothing itself: its verdicts are `normbench claims`' (tests/test_claims.py checks the rules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import load_experiment
from normbench.demo import DEMO_CONFIGS, cells, markdown
from normbench.results import load_runs
from normbench.sweep import run_experiment

quiet = Console(quiet=True)
DOCS = Path(__file__).resolve().parents[1] / "docs"


def one_seed(tmp_path_factory, name):
    out = tmp_path_factory.mktemp(name)
    run_experiment(load_experiment(name, ["seeds=[1]"]), out, console=quiet)
    exp_dir = out / name
    return {(c["activation"], c["norm"]): c for c in cells(exp_dir, load_runs(exp_dir))}


@pytest.fixture(scope="module")
def tf23(tmp_path_factory):
    return one_seed(tmp_path_factory, "morvan_tf23")


@pytest.fixture(scope="module")
def dead(tmp_path_factory):
    return one_seed(tmp_path_factory, "dead_neurons")


def test_seed_relu_setting_diverges_rather_than_dies(tf23):
    c = tf23["relu", "none"]
    assert c["diverged"] == 1 and c["diverged_steps"] == [1]
    assert c["initial_loss"]["median"] > 1e6 and 0 < c["dead_at_step_0"]["median"] < 1
    assert c["dead_fraction"]["median"] is None  # a diverged net's units are neither dead nor alive


def test_bn_keeps_relu_alive_and_trains(tf23):
    c = tf23["relu", "batch"]
    assert c["ok"] == 1 and c["dead_fraction"]["median"] < 0.1 and c["final_train_loss"]["median"] < 100


def test_tanh_without_bn_saturates_with_bn_does_not(tf23):
    none, batch = tf23["tanh", "none"], tf23["tanh", "batch"]
    assert none["saturated_fraction"]["median"] > 0.5 > 0.25 > batch["saturated_fraction"]["median"]
    assert batch["final_train_loss"]["median"] < none["final_train_loss"]["median"] / 3


def test_relu_units_really_die_without_bn_and_live_with_it(dead):
    none, batch = dead["relu", "none"], dead["relu", "batch"]
    assert none["dead_fraction"]["median"] > 0.5 and batch["dead_fraction"]["median"] < 0.1
    assert batch["final_train_loss"]["median"] < none["final_train_loss"]["median"] / 3


@pytest.mark.slow
def test_full_demo_under_both_kernels_gives_the_readme_verdicts_and_numbers(tmp_path):
    """The demo as a user runs it, with every experiment trained again on the autograd kernel (another float32
    rounding of the same runs, as another CPU gives): no verdict depends on the rounding, every verdict is the
    README's (docs/demo.json, from which the README's section is rendered), and each cell's median over seeds,
    under either kernel, lies within the range over seeds the README states."""
    result = CliRunner().invoke(app, ["demo", "dead-neurons", "--kernel", "both", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "demo.json").read_text())
    readme = json.loads((DOCS / "demo.json").read_text())
    verdicts = {(r["experiment"], r["claim_id"]): r["verdict"] for e in doc["experiments"] for r in e["claims"]}
    stated = {(r["experiment"], r["claim_id"]): r["verdict"] for e in readme["experiments"] for r in e["claims"]}
    assert "depends on rounding" not in verdicts.values()
    assert verdicts == stated
    for name in DEMO_CONFIGS:
        assert (tmp_path / name / "figures" / "cost.png").is_file()
        stated_cells = next(e["cells"] for e in readme["experiments"] if e["name"] == name)
        for exp_dir in (tmp_path / name, tmp_path / f"{name}-autograd"):
            for cell, ref in zip(cells(exp_dir, load_runs(exp_dir)), stated_cells, strict=True):
                for key, v in cell.items():
                    if isinstance(v, dict) and "median" in v and v["median"] is not None and key in ref:
                        lo, hi = ref[key]["min"], ref[key]["max"]
                        assert lo <= v["median"] <= hi, (exp_dir.name, cell["activation"], cell["norm"], key)
    assert (tmp_path / "demo.md").read_text() == markdown(doc)
