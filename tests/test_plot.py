"""Figures: percentiles read from stored histograms against numpy, the figure set, diverged runs drawn as panels
(never as data), overlays, the GIF, and a second --compare kept apart from the first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from normbench import plot as P
from normbench.cli import app

runner = CliRunner()


def stored(values: np.ndarray, lo: float, hi: float, bins: int) -> dict:
    """A histogram row as histograms.parquet stores it (numpy's binning; values outside counted apart)."""
    finite = values[np.isfinite(values)]
    counts, _ = np.histogram(finite, bins=bins, range=(lo, hi))
    return {
        "counts": counts,
        "lo": lo,
        "hi": hi,
        "below": int((finite < lo).sum()),
        "above": int((finite > hi).sum()),
        "nan": int(np.isnan(values).sum()),
        "inf": int(np.isinf(values).sum()),
        "n": len(values),
    }


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).normal(0.3, 2.0, 20_000),
        np.maximum(np.random.default_rng(1).normal(-0.2, 1.0, 20_000), 0.0),  # ReLU-like: 58% exact zeros
        np.random.default_rng(2).standard_cauchy(20_000),  # heavy tails: 1% and 99% fall outside the range
    ],
)
def test_percentiles_from_a_histogram_match_numpy_within_a_bin(values):
    lo, hi = np.quantile(values, [0.005, 0.995])
    bins = 30
    hists = pd.DataFrame([stored(values, lo, hi, bins)])
    got = P.percentiles(hists).iloc[0]
    width = (hi - lo) / bins
    for q in P.PERCENTILES:
        want = np.percentile(values, q)
        # Interpolating inside the bin that holds the percentile is off by less than that bin's width; outside
        # the range the answer is the edge (the value lies beyond it).
        assert abs(got[f"p{q}"] - np.clip(want, lo, hi)) <= width, q


def test_percentiles_edge_cases():
    rows = pd.DataFrame(
        [
            stored(np.full(100, np.nan), 0.0, 1.0, 4),  # a diverged layer: nothing finite
            stored(np.r_[np.full(90, -5.0), np.linspace(0, 1, 10)], 0.0, 1.0, 4),  # 90% below the range
            stored(np.zeros(50), -0.5, 0.5, 5),  # a dead layer: one value
        ]
    )
    got = P.percentiles(rows)
    assert got.iloc[0].isna().all()
    assert got.iloc[1]["p50"] == 0.0 and got.iloc[1]["p80"] == 0.0  # at the edge: the true values lie below
    assert np.allclose(got.iloc[2].to_numpy(), 0.0, atol=0.2)  # inside the one bin holding all values


def test_percentiles_stay_within_the_recorded_min_and_max():
    """A dead layer's values are all 0: with the min and max record.py stores, every percentile is 0, not a spread
    over the bin that holds them (which a figure with its own y range would show as a distribution)."""
    dead = np.zeros(300)
    row = stored(dead, 0.0, 0.05, 10) | {"min": 0.0, "max": 0.0}
    assert (P.percentiles(pd.DataFrame([row])).iloc[0] == 0.0).all()
    values = np.random.default_rng(3).uniform(2.0, 2.01, 1000)  # within the first of 10 bins over [2, 3]
    row = stored(values, 2.0, 3.0, 10) | {"min": values.min(), "max": values.max()}
    got = P.percentiles(pd.DataFrame([row])).iloc[0]
    assert values.min() <= got.min() and got.max() <= values.max()


@pytest.fixture
def tiny_results(tmp_path, write_config, tiny_raw):
    tiny_raw["grid"] = {"model.norm": ["none", "batch"], "model.activation": ["relu"]}
    tiny_raw["model"]["weight_init"]["std"] = 3.0  # without a norm the ReLU net diverges; with batch norm it does not
    tiny_raw["train"]["lr"] = 0.01
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(write_config(tiny_raw)), "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    return out / "tiny"


def test_figure_set_overlay_animation_and_a_second_comparison(tiny_results):
    exp = tiny_results
    result = runner.invoke(app, ["plot", str(exp), "--overlay", "--animate", "--ridge", "--point", "all"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (exp / "figures").iterdir())
    for point in ("pre_norm", "post_norm", "post_act"):
        for kind, ext in (("hist", "png"), ("anim", "gif"), ("ridge", "png")):
            assert f"{kind}_{point}_activation-relu.{ext}" in names
    assert {"cost.png", "dist_activation-relu.png", "grad_activation-relu.png", "units_activation-relu.png"} <= set(
        names
    )
    with Image.open(exp / "figures" / "anim_post_act_activation-relu.gif") as gif:
        assert gif.n_frames == 3  # steps 0, 6 and 12: one frame per recorded step
    for name in names:
        assert (exp / "figures" / name).stat().st_size > 1000

    # Another comparison goes to its own folder; plotting the default again leaves only its own figures.
    result = runner.invoke(app, ["plot", str(exp), "--compare", "seed"])
    assert result.exit_code == 0, result.output
    assert (exp / "figures" / "by-seed" / "cost.png").exists()
    # A grid key by an unambiguous last part, as summary --by takes it: the folder has its dotted name.
    result = runner.invoke(app, ["plot", str(exp), "--compare", "activation"])
    assert result.exit_code == 0, result.output
    assert (exp / "figures" / "by-model.activation" / "cost.png").exists()
    result = runner.invoke(app, ["plot", str(exp)])
    assert result.exit_code == 0, result.output
    assert not list((exp / "figures").glob("anim_*")), "figures of the earlier plot were left beside the new ones"


def test_a_diverged_run_is_a_labelled_panel_never_data(tiny_results):
    exp = P.load_experiment(tiny_results)
    diverged = exp.runs[exp.runs.status == "diverged"]
    assert len(diverged), "the fixture's no-norm runs are meant to diverge"
    fig = P._hist(exp, ("relu",), "post_act")
    runs = P._first_seed(exp.runs)
    n_layers = exp.tables["histograms"].layer.nunique()
    last_rows = fig.axes[len(runs) * n_layers :]  # the second block of rows: the last recorded step
    for r, (_, run) in enumerate(runs.iterrows()):
        panels = last_rows[r * n_layers : (r + 1) * n_layers]
        texts = [t.get_text() for ax in panels for t in ax.texts]
        if run.status == "diverged":
            assert all(not ax.patches for ax in panels), "a diverged run's values were drawn as a histogram"
            assert sum(f"at step {run.diverged_step}" in t for t in texts) == n_layers
        else:
            assert all(ax.patches for ax in panels)


def test_where_draws_a_selection_beside_the_full_set_and_the_report_shows_only_it(tiny_results):
    exp = tiny_results
    assert runner.invoke(app, ["plot", str(exp)]).exit_code == 0
    full = sorted(p.name for p in (exp / "figures").glob("*.png"))
    result = runner.invoke(app, ["plot", str(exp), "--where", "norm=batch"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (exp / "figures").glob("*.png")) == full  # the full set stays
    assert (exp / "figures" / "where-norm=batch" / "cost.png").exists()

    result = runner.invoke(app, ["report", str(exp), "--where", "norm=batch", "--out", str(exp / "batch.html")])
    assert result.exit_code == 0, result.output
    page = (exp / "batch.html").read_text()
    assert "--where norm=batch" in page and "2 runs (2 ok)" in page


def test_grids_of_panels_are_as_square_as_three_columns_allow():
    for n, shape in ((1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (7, (3, 3))):
        fig, axs = P._grid(n, 3, 1.0)
        assert axs.shape == shape and sum(ax.get_visible() for ax in axs.ravel()) == n
        P._done(fig)
