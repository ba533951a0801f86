"""Figures from a results folder: the article's histogram grid, cost curves, dead/saturated heatmaps.

    paths = plot_experiment(Path("results/morvan_tf23"), compare="model.norm", point="post_act", fmt="png")

Runs are grouped by every grid key except the compared one and `seed`: one figure set per group (e.g. per
activation). Histogram grids show one seed (the first); cost curves aggregate seeds as mean with a min-max band.
Nothing is left out silently: values outside a histogram's range and NaN/inf are printed on each panel, and a
diverged run is drawn up to its divergence step, marked with an x and labelled.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.record import POINTS
from normbench.store import FINISHED, experiment_axes, load_runs, load_table

POINT_TITLES = {
    "pre_norm": "before the norm",
    "post_norm": "after the norm",
    "post_act": "after the activation",
}
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


class PlotError(ValueError):
    pass


def plot_experiment(exp_dir: Path, compare: str | None = None, point: str = "post_act", fmt: str = "png") -> list[Path]:
    runs = load_runs(exp_dir)
    axes = [a for a in experiment_axes(exp_dir) if a in runs.columns]
    compare = compare or ("model.norm" if "model.norm" in axes else (axes[0] if axes else None))
    if compare is not None and compare not in axes:
        raise PlotError(f"--compare {compare!r} is not a grid key of {exp_dir.name}; grid keys: {', '.join(axes)}")
    group_keys = [a for a in axes if a not in (compare, "seed")]
    points = list(POINTS) if point == "all" else [point]
    out = exp_dir / "figures"
    out.mkdir(exist_ok=True)
    for old in out.glob(f"*.{fmt}"):  # figures of an earlier plot of this experiment would mislead
        old.unlink()

    finished = runs[runs.status.isin(FINISHED)]
    if finished.empty:
        raise PlotError(f"{exp_dir.name}: no finished runs to plot (statuses: {', '.join(sorted(set(runs.status)))})")
    tables = {name: load_table(exp_dir, name, finished.run_id.tolist()) for name in ("curves", "histograms", "layers")}
    groups = list(finished.groupby(group_keys, sort=False)) if group_keys else [((), finished)]
    paths = [_cost_figure(exp_dir.name, groups, group_keys, compare, tables["curves"], out / f"cost.{fmt}")]
    for key in numeric_axes(runs, axes):
        paths.append(
            _final_vs_figure(exp_dir.name, runs, axes, key, compare, out / f"final_vs_{key.split('.')[-1]}.{fmt}")
        )
    for key, grp in groups:
        slug = _slug(group_keys, key)
        label = _label(group_keys, key)
        first_seed = grp[grp.seed == grp.seed.min()] if "seed" in grp.columns else grp
        hists = tables["histograms"]
        hists = hists[hists.run_id.isin(first_seed.run_id)]
        for p in points:
            for step in _regular_steps(hists, first_seed):
                path = out / f"hist_{p}_{slug}_step{int(step):05d}.{fmt}"
                paths.append(_hist_figure(exp_dir.name, first_seed, compare, hists, p, int(step), label, path))
        layers = tables["layers"]
        paths.append(
            _units_figure(
                exp_dir.name,
                grp,
                compare,
                layers[layers.run_id.isin(grp.run_id)],
                label,
                out / f"units_{slug}.{fmt}",
            )
        )
    return paths


def _slug(keys: list[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return "_".join(f"{k.split('.')[-1]}-{v}" for k, v in zip(keys, values, strict=True)) or "all"


def _label(keys: list[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values, strict=True))


def _run_label(run: pd.Series, compare: str | None) -> str:
    return f"{compare.split('.')[-1]}={run[compare]}" if compare else str(run.run_id)


# ---------------------------------------------------------------------------------------------------------------
# Histogram grid: rows = compared runs, columns = layers


def _hist_figure(
    exp: str,
    runs: pd.DataFrame,
    compare: str | None,
    hists: pd.DataFrame,
    point: str,
    step: int,
    label: str,
    path: Path,
) -> Path:
    layers = sorted(hists.layer.unique())
    fig, axs = plt.subplots(
        len(runs),
        len(layers),
        figsize=(width := max(1.9 * len(layers) + 1.0, 7.0), height := 1.8 * len(runs) + 1.0),
        squeeze=False,
        sharey="row",
    )
    for r, (_, run) in enumerate(runs.iterrows()):
        for c, layer in enumerate(layers):
            ax = axs[r][c]
            mine = hists[(hists.run_id == run.run_id) & (hists.layer == layer) & (hists.point == point)]
            row = mine[mine.step == step]
            shown = step
            if row.empty and run.status == "diverged" and (mine.step <= step).any():
                # A diverged run stopped early: show its last values (at the divergence step), labelled as such.
                shown = int(mine.step[mine.step <= step].max())
                row = mine[mine.step == shown]
            if c == 0:
                ax.set_ylabel(_run_label(run, compare) + "\nfraction of values", fontsize=8)
            if r == 0:
                ax.set_title("input" if layer == 0 else f"layer {layer}", fontsize=9)
            ax.tick_params(labelsize=7)
            if row.empty:
                why = (
                    f"diverged at step {run.diverged_step}\nno values after it"
                    if run.status == "diverged"
                    else "not recorded"
                )
                _note(ax, 0.5, 0.5, why, ha="center", va="center")
                ax.set_xticks([])
                continue
            _hist_panel(ax, row.iloc[0])
            if shown != step:
                _note(ax, 0.03, 0.95, f"step {shown}:\ndiverged", ha="left", va="top")
    fig.suptitle(
        f"{exp}: values {POINT_TITLES[point]} ({point}) at step {step}"
        + (f" | {label}" if label else "")
        + (f" | seed {runs.seed.iloc[0]}" if "seed" in runs.columns else ""),
        fontsize=10,
    )
    # Margins in inches, so that labels fit whatever the number of rows and columns.
    fig.subplots_adjust(
        left=1.0 / width, right=1 - 0.15 / width, bottom=0.4 / height, top=1 - 0.75 / height, wspace=0.25, hspace=0.35
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _note(ax: plt.Axes, x: float, y: float, text: str, **kw: Any) -> None:
    """Text in axes coordinates; red and small unless told otherwise (most notes are warnings)."""
    ax.text(x, y, text, transform=ax.transAxes, **{"fontsize": 7, "color": "tab:red", **kw})


def _regular_steps(hists: pd.DataFrame, runs: pd.DataFrame) -> list[int]:
    """The scheduled histogram steps; a diverged run's extra record at its divergence step gets no figure of its
    own (its row in later figures shows it instead), unless every run diverged."""
    healthy = runs[runs.status != "diverged"].run_id
    steps = hists[hists.run_id.isin(healthy)].step if len(healthy) else hists.step
    return sorted(int(s) for s in steps.unique())


def _pct(count: float, n: float) -> str:
    """A share that is never shown as 0% when something is there."""
    share = count / n
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


def _hist_panel(ax: plt.Axes, h: pd.Series) -> None:
    counts = np.asarray(h["counts"], dtype=float)
    n = float(h["n"])
    edges = np.linspace(h["lo"], h["hi"], len(counts) + 1)
    # One stairs artist instead of a bar patch per bin: the same picture, several times faster to draw.
    ax.stairs(counts / n, edges, fill=True, color="tab:blue")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    ax.set_xlim(h["lo"], h["hi"])
    notes = []
    if h["below"]:
        notes.append(f"<{h['lo']:g}: {_pct(h['below'], n)}")
    if h["above"]:
        notes.append(f">{h['hi']:g}: {_pct(h['above'], n)}")
    if h["nan"]:
        notes.append(f"NaN: {_pct(h['nan'], n)}")
    if h["inf"]:
        notes.append(f"inf: {_pct(h['inf'], n)}")
    if notes:
        bad = h["nan"] or h["inf"]
        box = dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1)
        _note(ax, 0.97, 0.95, "\n".join(notes), ha="right", va="top", color="tab:red" if bad else "black", bbox=box)


# ---------------------------------------------------------------------------------------------------------------
# Cost curves: one panel per group, one line per compared value, seeds as mean and min-max band


def _cost_figure(
    exp: str, groups: list, group_keys: list[str], compare: str | None, curves: pd.DataFrame, path: Path
) -> Path:
    fig, axs = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.8), squeeze=False)
    for ax, (key, grp) in zip(axs[0], groups, strict=True):
        variants = list(grp.groupby(compare, sort=False)) if compare else [("", grp)]
        finite_all: list[float] = []
        marks = []
        has_test = False
        for i, (value, runs) in enumerate(variants):
            color = COLORS[i % len(COLORS)]
            name = f"{compare.split('.')[-1]}={value}" if compare else "all runs"
            for split, mode, style in (("train", "train", "-"), ("test", "eval", "--")):
                c = curves[curves.run_id.isin(runs.run_id) & (curves.split == split) & (curves["mode"] == mode)]
                if c.empty:
                    continue
                wide = c.pivot_table(index="step", columns="run_id", values="loss", aggfunc="first", dropna=False)
                vals = wide.to_numpy(dtype=float, copy=True)
                vals[~np.isfinite(vals)] = np.nan  # a diverged seed leaves the aggregate at its divergence step
                # numpy warns on all-NaN slices (steps after every seed diverged): expected here
                with np.errstate(all="ignore"), warnings.catch_warnings(action="ignore", category=RuntimeWarning):
                    mean, lo, hi = np.nanmean(vals, 1), np.nanmin(vals, 1), np.nanmax(vals, 1)
                steps = wide.index.to_numpy()
                ok = np.isfinite(mean)
                finite_all += list(mean[ok]) + list(lo[ok]) + list(hi[ok])
                nseeds = vals.shape[1]
                has_test |= split == "test"
                # One legend entry per compared value; line styles are explained once, below.
                label = name + (f" (mean of {nseeds})" if nseeds > 1 else "") if split == "train" else None
                ax.plot(steps[ok], mean[ok], style, color=color, lw=1.6, label=label)
                if nseeds > 1:
                    ax.fill_between(steps[ok], lo[ok], hi[ok], color=color, alpha=0.2, lw=0)
                if split == "train":
                    for _, run in runs[runs.status == "diverged"].iterrows():
                        col = wide[run.run_id].to_numpy(dtype=float)
                        fin = np.isfinite(col)
                        last = (steps[fin][-1], col[fin][-1]) if fin.any() else (steps[0], np.nan)
                        marks.append((color, int(run.diverged_step), last))
        ylog = _wide(finite_all)
        if ylog:
            ax.set_yscale("log")
        for color, dstep, (s, v) in marks:
            y = v if np.isfinite(v) else (max(finite_all) if finite_all else 1.0)
            ax.plot([s], [y], "x", color=color, ms=10, mew=2.5)
            ax.axvline(dstep, color=color, ls=":", lw=1)
        if marks:
            by_color: dict[str, list[int]] = {}
            for color, dstep, _ in marks:
                by_color.setdefault(color, []).append(dstep)
            text = "\n".join(
                f"{len(v)} run(s) diverged at step {min(v)}"
                + (f"-{max(v)}" if max(v) != min(v) else "")
                + " (x: last finite loss)"
                for v in by_color.values()
            )
            box = dict(facecolor="white", alpha=0.85, edgecolor="tab:red")
            _note(ax, 0.98, 0.97, text, ha="right", va="top", fontsize=8, bbox=box)
        ax.set_xlabel("step (parameter updates)")
        ax.set_ylabel("loss" + (" (log scale)" if ylog else ""))
        ax.set_title(_label(group_keys, key) or exp, fontsize=10)
        ax.grid(alpha=0.3)
        if has_test:
            ax.plot([], [], "-", color="black", label="solid: train set, batch statistics")
            ax.plot([], [], "--", color="black", label="dashed: test set, running statistics")
    axs[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{exp}: cost curves", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _wide(values: list[float]) -> bool:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(pos) and max(pos) / min(pos) > 100


# ---------------------------------------------------------------------------------------------------------------
# Final numbers against a numeric grid key (batch size, weight scale, lr): one line per compared value


def numeric_axes(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """Grid keys other than seed whose values are all numbers, with at least 3 of them."""
    found = []
    for a in axes:
        values = runs[a].dropna().unique()
        numeric = all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in values)
        if a != "seed" and numeric and len(values) >= 3:
            found.append(a)
    return found


def _final_vs_figure(exp: str, runs: pd.DataFrame, axes: list[str], key: str, compare: str | None, path: Path) -> Path:
    """Final train loss and (for classification) final test accuracy in eval mode against `key`; seeds as mean
    with min-max band; failed or diverged runs are counted in the legend, never silently averaged in."""
    rest = [a for a in axes if a not in (key, compare, "seed")]
    groups = list(runs.groupby(rest, sort=False)) if rest else [((), runs)]
    metrics = [("final_train_loss", "final train loss (batch statistics)")]
    if runs.final_test_accuracy.notna().any():
        metrics.append(("final_test_accuracy", "final test accuracy (running statistics)"))
    fig, axs = plt.subplots(len(groups), len(metrics), figsize=(5.5 * len(metrics), 3.6 * len(groups)), squeeze=False)
    for r, (gkey, grp) in enumerate(groups):
        variants = list(grp.groupby(compare, sort=False)) if compare else [("", grp)]
        for c, (metric, title) in enumerate(metrics):
            ax = axs[r][c]
            for i, (value, vruns) in enumerate(variants):
                ok = vruns[vruns.status == "ok"]
                stats = ok.groupby(key)[metric].agg(["mean", "min", "max"]).sort_index()
                lost = len(vruns) - len(ok)
                name = f"{compare.split('.')[-1]}={value}" if compare else "runs"
                color = COLORS[i % len(COLORS)]
                ax.plot(
                    stats.index,
                    stats["mean"],
                    "o-",
                    color=color,
                    ms=3,
                    label=name + (f" ({lost} diverged/failed)" if lost else ""),
                )
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
            xs = runs[key].astype(float)
            if xs.min() > 0 and xs.max() / xs.min() >= 8:
                ax.set_xscale("log", base=2 if key.endswith("batch_size") else 10)
            if metric == "final_train_loss" and _wide(list(runs[metric].dropna())):
                ax.set_yscale("log")
            ax.set_xlabel(key)
            ax.set_title(title + (f" | {_label(rest, gkey)}" if rest else ""), fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"{exp}: final numbers against {key}" + (" (mean and min-max over seeds)" if "seed" in axes else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Dead / saturated heatmaps: layer x step, one row of panels per run


def _units_figure(
    exp: str, runs: pd.DataFrame, compare: str | None, layers: pd.DataFrame, label: str, path: Path
) -> Path:
    fig, axs = plt.subplots(len(runs), 2, figsize=(10, 1.6 * len(runs) + 0.8), squeeze=False)
    image = None
    for r, (_, run) in enumerate(runs.iterrows()):
        data = layers[layers.run_id == run.run_id]
        name = _run_label(run, compare) + (f", seed {run.seed}" if "seed" in runs.columns else "")
        for c, metric in enumerate(("dead_fraction", "saturated_fraction")):
            ax = axs[r][c]
            wide = data.pivot_table(index="layer", columns="step", values=metric, aggfunc="first", dropna=False)
            if r == 0:
                ax.set_title("dead units (output 0 for every sample)" if c == 0 else "saturated values", fontsize=9)
            ax.set_ylabel(name + "\nlayer", fontsize=8)
            if wide.empty or wide.isna().all().all():
                # Saturation is NaN everywhere for an activation without a saturated region (ReLU), while the
                # dead fraction next to it is finite; both are NaN only where the values themselves were not.
                no_region = metric == "saturated_fraction" and data.dead_fraction.notna().any()
                why = "the activation has no saturating region" if no_region else "no finite values"
                _note(ax, 0.5, 0.5, f"n/a: {why}", ha="center", va="center", fontsize=8, color="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            masked = np.ma.masked_invalid(wide.to_numpy(dtype=float))
            cmap = plt.get_cmap("magma_r").with_extremes(bad="lightgray")
            image = ax.imshow(
                masked,
                aspect="auto",
                cmap=cmap,
                vmin=0,
                vmax=1,
                origin="lower",
                extent=(-0.5, wide.shape[1] - 0.5, wide.index.min() - 0.5, wide.index.max() + 0.5),
            )
            steps = list(wide.columns)
            ticks = range(0, len(steps), max(1, len(steps) // 8))
            ax.set_xticks(list(ticks), [str(steps[t]) for t in ticks], fontsize=7)
            ax.set_yticks(list(wide.index))
            ax.tick_params(labelsize=7)
            if run.status == "diverged":
                _note(ax, 0.99, 0.02, f"diverged at step {run.diverged_step} (gray: NaN/inf)", ha="right", va="bottom")
    for ax in axs[-1]:
        ax.set_xlabel("step", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axs.ravel().tolist(), fraction=0.02, pad=0.01, label="fraction")
    fig.suptitle(f"{exp}: dead and saturated units" + (f" | {label}" if label else ""), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
