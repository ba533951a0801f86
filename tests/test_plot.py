"""Figures: percentiles read from stored histograms against numpy, the figure set, diverged runs drawn as panels
(never as data), overlays, the GIF, and a second --compare kept apart from the first."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from normbench.cli import app
from normbench.points import FORWARD as FORWARD_POINTS
from normbench.views import data, distributions, figures, render, style, units
from normbench.views.curves import cost as cost_figure

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
    got = data.percentiles(hists).iloc[0]
    width = (hi - lo) / bins
    for q in data.PERCENTILES:
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
    got = data.percentiles(rows)
    assert got.iloc[0].isna().all()
    assert got.iloc[1]["p50"] == 0.0 and got.iloc[1]["p80"] == 0.0  # at the edge: the true values lie below
    assert np.allclose(got.iloc[2].to_numpy(), 0.0, atol=0.2)  # inside the one bin holding all values


def test_percentiles_stay_within_the_recorded_min_and_max():
    """A dead layer's values are all 0: with the min and max record.py stores, every percentile is 0, not a spread
    over the bin that holds them (which a figure with its own y range would show as a distribution)."""
    dead = np.zeros(300)
    row = stored(dead, 0.0, 0.05, 10) | {"min": 0.0, "max": 0.0}
    assert (data.percentiles(pd.DataFrame([row])).iloc[0] == 0.0).all()
    values = np.random.default_rng(3).uniform(2.0, 2.01, 1000)  # within the first of 10 bins over [2, 3]
    row = stored(values, 2.0, 3.0, 10) | {"min": values.min(), "max": values.max()}
    got = data.percentiles(pd.DataFrame([row])).iloc[0]
    assert values.min() <= got.min() and got.max() <= values.max()


@pytest.fixture
def tiny_results(tmp_path, write_config, tiny_raw):
    tiny_raw["grid"] = {"model.norm": ["none", "batch"], "model.activation": ["relu"]}
    tiny_raw["model"]["weight_init"]["std"] = 3.0  # without a norm the ReLU net diverges; with batch norm it does not
    tiny_raw["train"]["lr"] = 0.01
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(write_config(tiny_raw)), "--out", str(out)])
    assert result.exit_code == 0, result.output  # diverged runs are results; a failed run is exit 1
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
    exp = data.read_experiment(tiny_results)
    diverged = exp.runs[exp.runs.status == "diverged"]
    assert len(diverged), "the fixture's no-norm runs are meant to diverge"
    fig = distributions.hist(exp, ("relu",), "post_act")
    runs = style.first_seed(exp.runs)
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


# ---------------------------------------------------------------------------------------------------------------
# Experiments made by hand: tables whose values the figures must show (or must not)


def hist_row(run_id: str, step: int, layer: int, point: str, values: np.ndarray, bins: int = 20) -> dict:
    """A histograms.parquet row of `values` over their own range, as record.py stores it."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 0.05
    return {"run_id": run_id, "step": step, "layer": layer, "point": point, "min": float(values.min()),
            "max": float(values.max()), **stored(values, lo, hi, bins)}  # fmt: skip


def made_experiment(tmp_path, runs: list[dict], hists=(), layers=(), curves=(), eval_mode="train", groups=("relu",)):
    """An Experiment as load_experiment gives it, from rows made by the test (runs: run_id, norm, seed, status,
    diverged_step and, with several groups, activation)."""
    table = pd.DataFrame(runs)
    table = table.rename(columns={"norm": "model.norm", "activation": "model.activation"})
    if "model.activation" not in table.columns:
        table["model.activation"] = groups[0]
    table["diverged_step"] = table.get("diverged_step", pd.Series([None] * len(table))).astype("Int64")
    h = pd.DataFrame(list(hists))
    if len(h):
        h = h.join(data.percentiles(h))
    exp = data.ExperimentData(
        dir=tmp_path / "made",
        runs=table,
        all_runs=table,
        axes=["model.norm", "model.activation", "seed"],
        tied=[["model.norm"], ["model.activation"], ["seed"]],
        compare="model.norm",
        group_keys=["model.activation"],
        config={"record": {"eval_mode": eval_mode, "eval_split": "train"}, "model": {}, "train": {"steps": 20}},
    )
    exp.tables = {
        "histograms": data.before_divergence(h, table),
        "layers": data.before_divergence(pd.DataFrame(list(layers)), table),
        "curves": data.before_divergence(pd.DataFrame(list(curves)), table),
        "landscape": pd.DataFrame(),
    }
    return exp


def figure_numbers(fig) -> np.ndarray:
    """Every number a figure draws as data: line points, collections' vertices, offsets and colour values, patches'
    corners (in their data coordinates), images."""
    out = []
    for ax in fig.axes:
        for line in ax.lines:
            out.append(np.asarray(line.get_xydata(), float).ravel())
        for c in ax.collections:
            out += [np.asarray(p.vertices, float).ravel() for p in c.get_paths()]
            out.append(np.asarray(c.get_offsets(), float).ravel())
            if c.get_array() is not None:
                out.append(np.ma.filled(np.ma.asarray(c.get_array(), float), np.nan).ravel())
        for p in ax.patches:
            out.append(p.get_patch_transform().transform(p.get_path().vertices).ravel())
        for im in ax.images:
            out.append(np.ma.filled(np.ma.asarray(im.get_array(), float), np.nan).ravel())
    return np.concatenate(out) if out else np.array([])


def all_figures(exp):
    """Each figure `normbench plot --overlay --ridge --point all` draws for the experiment, as (name, figure)."""
    out = exp.dir / "figures"
    with render._loaded([exp]):
        for fig in figures.planned(exp, "all", ("overlay", "ridge")):
            yield (out / fig.path("png")).name, fig.spec.draw(exp, **fig.args())


SENTINEL = 4242.0  # what a diverged run "recorded" at and after its divergence step in the test below
SENTINEL_SHARE = 0.4242


def test_no_figure_draws_what_a_diverged_run_recorded_at_or_after_its_divergence(tiny_results, monkeypatch):
    """Every value a diverged run has at its divergence step and later is replaced by a finite number no real
    value equals (4242, or 0.4242 for fractions, histograms over [4242, 4243]); no figure may draw it."""
    load = data.load_table

    def with_sentinels(exp_dir, name, ids):
        table = load(exp_dir, name, ids)
        if table.empty:
            return table
        runs = data.load_runs(exp_dir)
        fake = []
        for run in runs[runs.status == "diverged"].itertuples():
            mine = table[table.run_id == run.run_id]
            before = mine[mine.step < run.diverged_step]
            last = before[before.step == before.step.max()]
            for step in (run.diverged_step, table.step.max()):  # its divergence step, and a later record
                fake.append(last.assign(step=step))
        if not fake:
            return table
        fake = pd.concat(fake, ignore_index=True)
        for col in fake.columns:
            if col in ("run_id", "step", "layer", "point", "split", "mode", "scale"):
                continue
            if col == "counts":
                fake[col] = [np.full(len(c), 10) for c in fake[col]]
            elif col.endswith("fraction"):
                fake[col] = SENTINEL_SHARE
            elif col in ("below", "above", "nan", "inf"):
                fake[col] = 0
            elif col == "n":
                fake[col] = [10 * len(c) for c in fake["counts"]]
            elif col in ("hi", "max"):
                fake[col] = SENTINEL + 1
            elif pd.api.types.is_numeric_dtype(fake[col]):
                fake[col] = SENTINEL
        kept = table[~table.run_id.isin(fake.run_id) | (table.step < table.run_id.map(
            runs.set_index("run_id").diverged_step.astype(float)).fillna(np.inf))]  # fmt: skip
        return pd.concat([kept, fake], ignore_index=True)

    monkeypatch.setattr(data, "load_table", with_sentinels)
    for compare in (None, "seed"):  # a diverged run beside a healthy one, and a figure of diverged runs only
        exp = data.read_experiment(tiny_results, compare)
        assert (exp.runs.status == "diverged").any()
        for name, fig in all_figures(exp):
            if fig is None:
                continue
            numbers = figure_numbers(fig)
            drawn = (numbers >= SENTINEL) & (numbers <= SENTINEL + 1) | np.isclose(numbers, SENTINEL_SHARE)
            assert not drawn.any(), f"{name} draws values recorded at or after a divergence"
            texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
            assert not any("4242" in t or "4.2e3" in t for t in texts), name
            style.close_figure(fig)


def test_units_rows_share_the_step_axis_and_a_diverged_row_says_where_it_stopped(tmp_path):
    runs = [
        {"run_id": "none1", "norm": "none", "seed": 1, "status": "diverged", "diverged_step": 1},
        {"run_id": "bn1", "norm": "batch", "seed": 1, "status": "ok"},
    ]
    layers = [
        {"run_id": rid, "step": step, "layer": layer, "dead_fraction": 0.1 * layer, "saturated_fraction": np.nan}
        for rid, steps in (("none1", (0,)), ("bn1", (0, 50, 100, 150, 200, 250)))
        for step in steps
        for layer in (1, 2, 3)
    ]
    exp = made_experiment(tmp_path, runs, layers=layers)
    fig = units.units(exp, ("relu",))
    heat = [ax for ax in fig.axes if ax.get_ylabel().endswith("layer")]
    assert len(heat) == 2
    assert heat[0].get_xlim() == heat[1].get_xlim()  # one step axis: the diverged row is not its own -0.5..1.5
    none_row = heat[0]
    cells = none_row.collections[0].get_coordinates()[..., 0]
    assert cells.max() <= 1  # its only cell (step 0) ends at the divergence step
    band = [p for p in none_row.patches if p.get_hatch()]
    x0, x1 = band[0].get_patch_transform().transform(band[0].get_path().vertices)[:, 0][[0, 1]]
    assert (x0, x1) == (1, none_row.get_xlim()[1])  # from the divergence step to the end of the axis
    assert [t.get_text() for t in none_row.texts] == ["diverged at step 1"]


def png_sizes(folder) -> dict[str, tuple[int, int]]:
    sizes = {}
    for path in folder.glob("*.png"):
        with Image.open(path) as image:
            sizes[path.name] = image.size
    return sizes


def test_overlays_are_drawn_beside_the_default_figures_and_the_report_names_them(tiny_results):
    exp = tiny_results
    assert runner.invoke(app, ["plot", str(exp)]).exit_code == 0
    default = png_sizes(exp / "figures")
    result = runner.invoke(app, ["plot", str(exp), "--overlay"])
    assert result.exit_code == 0, result.output
    with_overlay = png_sizes(exp / "figures")
    added = set(with_overlay) - set(default)
    assert added == {"overlay_post_act_activation-relu.png"}
    # The default figures are still the default ones (the histogram grid has one row per run and step, so it is
    # taller than the overlay's one row per step), not overlays written under their names.
    assert {k: with_overlay[k] for k in default} == default
    assert with_overlay["overlay_post_act_activation-relu.png"][1] < default["hist_post_act_activation-relu.png"][1]

    read = data.read_experiment(exp)
    (fig,) = [f for f in figures.planned(read, "post_act", ("overlay",)) if f.kind == "overlay"]
    assert (fig.kind, fig.point, fig.slug, str(fig.path("png"))) == (
        "overlay",
        "post_act",
        "activation-relu",
        "overlay_post_act_activation-relu.png",
    )
    alt, caption = fig.caption()
    assert "overlaid" in alt and "on the same axes" in caption and "model.activation = relu" in caption
    result = runner.invoke(app, ["report", str(exp), "--out", str(exp / "page.html")])
    assert result.exit_code == 0, result.output
    page = (exp / "page.html").read_text()
    assert page.count("(overlay_post_act_activation-relu.png)") == 1
    assert page.count("(hist_post_act_activation-relu.png)") == 1


def test_distribution_panels_hold_one_series_each_on_its_own_y_range(tmp_path):
    """Batch norm's +-2 next to no norm's +-15 (as in morvan_tf23's tanh net): each panel draws one run's bands in
    one colour, and its y range is its own values' with matplotlib's default 5% margins."""
    rng = np.random.default_rng(0)
    runs = [
        {"run_id": "none1", "norm": "none", "seed": 1, "status": "ok"},
        {"run_id": "bn1", "norm": "batch", "seed": 1, "status": "ok"},
    ]
    scale = {"none1": 15 / 2.33, "bn1": 2 / 2.33}  # 1st-99th percentile about +-15 and +-2
    hists = [
        hist_row(rid, step, layer, point, rng.normal(0, scale[rid], 5000))
        for rid in scale
        for step in (0, 10, 20)
        for layer in (1, 2)
        for point in FORWARD_POINTS
    ]
    exp = made_experiment(tmp_path, runs, hists=hists)
    fig = distributions.dist(exp, ("relu",))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.collections]
    assert len(panels) == 2 * 2 * 3  # runs x layers x points
    spans = {}
    for ax in panels:
        hues = {tuple(np.round(c[:3], 6)) for coll in ax.collections for c in coll.get_facecolors()}
        assert len(hues) == 1, "two series' translucent bands in one panel"
        drawn = np.concatenate([np.asarray(p.vertices)[:, 1] for c in ax.collections for p in c.get_paths()])
        lo, hi = ax.get_ylim()
        assert lo <= drawn.min() and drawn.max() <= hi
        assert (drawn.max() - drawn.min()) / (hi - lo) >= 1 / 1.1 - 1e-9  # its own values fill the axis
        spans.setdefault(hues.pop(), []).append(drawn.max() - drawn.min())
    none_span, bn_span = (np.mean(v) for v in spans.values())
    assert 25 < none_span < 35 and 3 < bn_span < 5


def test_a_blown_up_run_does_not_set_the_cost_axis_and_4_panels_are_2x2(tmp_path):
    groups = ("a", "b", "c", "d")
    runs = [{"run_id": f"{g}{n}", "norm": n, "activation": g, "seed": 1, "status": "ok"} for g in groups
            for n in ("none", "batch")]  # fmt: skip
    runs[0] |= {"status": "diverged", "diverged_step": 4}
    steps = np.arange(0, 10)
    curves = [
        {"run_id": r["run_id"], "step": int(s), "split": "train", "mode": "train", "loss": 2.0 / (1 + s)}
        for r in runs
        for s in steps
    ]
    for c in curves:
        if c["run_id"] == "anone":
            c["loss"] = {3: 1e21}.get(c["step"], c["loss"]) if c["step"] < 4 else np.inf
    exp = made_experiment(tmp_path, runs, curves=curves, groups=groups)
    fig = cost_figure(exp)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == 2  # 2 columns
    assert len({round(ax.get_position().y0, 3) for ax in panels}) == 2  # 2 rows
    lo, hi = panels[0].get_ylim()
    healthy = 2.0 / (1 + steps)
    # the runs that did not blow up span the axis but for matplotlib's default 5% margins (in log space on a log axis)
    scale = np.log10 if panels[0].get_yscale() == "log" else np.asarray
    assert (scale(healthy.max()) - scale(healthy.min())) / (scale(hi) - scale(lo)) >= 1 / 1.1 - 1e-9
    ax = panels[0]
    edge = [line for line in ax.lines if line.get_marker() == "^"]
    assert len(edge) == 1 and tuple(edge[0].get_xydata()[0]) == (3.0, hi)  # marked at the top edge, at its step
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "diverged at step 4" in notes and "1e21" in notes


def test_the_seeds_bands_of_two_series_cross_without_blending(tmp_path):
    runs = [{"run_id": f"{n}{s}", "norm": n, "seed": s, "status": "ok"} for n in ("none", "batch") for s in (1, 2)]
    curves = [
        {"run_id": r["run_id"], "step": step, "split": "train", "mode": "train", "loss": 1.0 + 0.1 * r["seed"] + step}
        for r in runs
        for step in range(5)
    ]  # both compared values' bands cover the same losses
    fig = cost_figure(made_experiment(tmp_path, runs, curves=curves))
    bands = fig.axes[0].collections
    assert len(bands) == 2
    assert all((band.get_facecolor()[:, 3] == 0).all() for band in bands)  # nothing translucent to blend
    assert bands[0].get_hatch() != bands[1].get_hatch()
    assert [matplotlib.colors.to_hex(b.get_edgecolor()[0]) for b in bands] == [c.lower() for c in style.COLORS[:2]]


def test_grids_of_panels_are_as_square_as_three_columns_allow():
    for n, shape in ((1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (7, (3, 3))):
        fig, axs = style.panel_grid(n, 3, 1.0)
        assert axs.shape == shape and sum(ax.get_visible() for ax in axs.ravel()) == n
        style.close_figure(fig)


def test_figures_of_one_seed_show_or_state_how_far_the_other_seeds_are(tmp_path):
    runs = [{"run_id": f"bn{s}", "norm": "batch", "seed": s, "status": "ok"} for s in (1, 2, 3)]
    runs += [{"run_id": "none1", "norm": "none", "seed": 1, "status": "ok"}]
    runs += [
        {"run_id": f"none{s}", "norm": "none", "seed": s, "status": "diverged", "diverged_step": 5} for s in (2, 3)
    ]
    shift = {"bn1": 0.0, "bn2": 0.5, "bn3": 0.25, "none1": 0.0, "none2": 0.0, "none3": 0.0}
    dead = {"bn1": 0.1, "bn2": 0.4, "bn3": 0.2, "none1": 0.5, "none2": 0.5, "none3": 0.5}
    uniform = np.linspace(0, 1, 4001)
    hists = [hist_row(rid, step, 1, "post_act", uniform + shift[rid]) for rid in shift for step in (0, 10)]
    layers = [{"run_id": rid, "step": step, "layer": 1, "dead_fraction": dead[rid], "saturated_fraction": np.nan}
              for rid in dead for step in (0, 10)]  # fmt: skip
    exp = made_experiment(tmp_path, runs, hists=hists, layers=layers)
    # Stated: uniform on [0, 1] against uniform on [0.5, 1.5] is a KS distance of 0.5; the diverged seeds counted.
    fig = distributions.hist(exp, ("relu",), "post_act")
    text = " ".join(t.get_text() for t in fig.texts)
    assert "seed 1 of 3 drawn" in text
    assert "histograms at the last step (largest KS distance from the drawn seed's): " in text
    assert "norm=batch 0.50 (layer 1)" in text
    assert "norm=none: 2 diverged" in text
    # Shown: the units figure's column of every seed's last values, from the lowest to the highest.
    fig = units.units(exp, ("relu",))
    strips = [ax for ax in fig.axes if ax.get_xlim() == (-0.05, 1.05)]  # the seeds' columns, 0 to 100%
    bars = {tuple(np.round(seg[:, 0], 6)) for ax in strips for c in ax.collections for seg in c.get_segments()}
    assert (0.1, 0.4) in bars  # batch norm's three seeds: 10% to 40% dead


def test_eval_mode_figures_say_what_step_0_shows(tmp_path):
    runs = [{"run_id": rid, "norm": norm, "seed": 1, "status": "ok"} for rid, norm in (("n", "none"), ("b", "batch"))]
    rng = np.random.default_rng(1)
    hists = [
        hist_row(rid, step, 1, p, rng.normal(0, 1, 500)) for rid in "nb" for step in (0, 5) for p in FORWARD_POINTS
    ]
    layers = [{"run_id": rid, "step": step, "layer": 1, "dead_fraction": 0.2, "saturated_fraction": np.nan}
              for rid in "nb" for step in (0, 5)]  # fmt: skip
    said = "batch norm's running statistics are still their initial mean 0, variance 1"
    for mode, expected in (("eval", True), ("train", False)):
        exp = made_experiment(tmp_path, runs, hists=hists, layers=layers, eval_mode=mode)
        for draw in (units.units, distributions.dist, lambda e, g: distributions.hist(e, g, "post_act")):
            fig = draw(exp, ("relu",))
            assert any(said in t.get_text() for t in fig.texts) == expected, (mode, draw)
            style.close_figure(fig)
