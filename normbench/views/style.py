"""What every figure shares: the palette and sizes, the words of titles and notes, the reused figures of small
multiples (REUSABLE), axis helpers; matplotlib draws into files only (Agg)."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.labels import setting, settings, value_text
from normbench.results import tied_with
from normbench.views.data import ExperimentData

matplotlib.use("Agg")  # files only, no display needed


# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


OUT_OF_RANGE = "#8c8c8c"


BROKEN = "#D55E00"  # NaN / inf / diverged


WIDTH = 9.0  # inches; at DPI this is the README's width, so nothing is scaled down when shown there


DPI = 100


plt.rcParams.update(
    {"text.usetex": False, "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7.5}
)


def literal(text: str) -> str:
    """A value from a config as matplotlib prints it literally: `a$b$` is not mathtext (no TeX is used)."""
    return text.replace("$", r"\$")


def group_label(keys: list[str], values: Any) -> str:
    """A group of runs in a figure: 'activation=relu, lr=0.1' (labels.settings, printed literally)."""
    return settings(keys, values, show=literal)


def value_label(compare: str | None, value: Any) -> str:
    """A compared value in a figure: 'norm=batch' (labels.setting, printed literally); 'all runs' without one."""
    return setting(compare, value, show=literal) if compare else "all runs"


def runs_of_group(exp: ExperimentData, key: Any) -> pd.DataFrame:
    for k, grp in exp.groups():
        if k == key:
            return grp
    raise KeyError(key)


def variant_keys(exp: ExperimentData, runs: pd.DataFrame) -> list[str]:
    """The grid keys that tell `runs`' variants apart: the compared one, and each key zipped with it that takes
    several values among runs of one compared value (model.norm_paths both and input, both with norm batch_step);
    a zipped key that only follows the compared one adds nothing to a label."""
    if not exp.compare:
        return []
    tied = [k for k in tied_with(exp.tied, exp.compare) if k != exp.compare and k in runs.columns]
    texts = runs[tied].map(value_text)  # a list value (parquet's array) as its text: comparable, hashable
    same = texts.groupby(runs[exp.compare].map(value_text), sort=False)
    return [exp.compare, *(k for k in tied if (same[k].nunique() > 1).any())]


def compared_variants(exp: ExperimentData, runs: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    """`runs` split into variants (their seeds together), each with its values of variant_keys (one value for one
    key, a tuple for several): what variant_label names."""
    keys = variant_keys(exp, runs)
    if not keys:
        return [("", runs)]
    return list(runs.groupby(keys if len(keys) > 1 else keys[0], sort=False, dropna=False))


def variant_label(exp: ExperimentData, runs: pd.DataFrame, value: Any) -> str:
    """A variant of `runs` in a figure: 'norm=batch_step, norm_paths=input' (every key of variant_keys,
    labels.settings, printed literally); 'all runs' without a compared key."""
    keys = variant_keys(exp, runs)
    values = value if len(keys) > 1 else (value,)  # one key's value may itself be a tuple (a list-valued key)
    return settings(keys, values, show=literal) if keys else "all runs"


def run_label(exp: ExperimentData, runs: pd.DataFrame, run: pd.Series) -> str:
    """variant_label of the variant of `runs` that `run` belongs to."""
    keys = variant_keys(exp, runs)
    if not keys:
        return "all runs"
    return variant_label(exp, runs, tuple(run[k] for k in keys) if len(keys) > 1 else run[keys[0]])


def figure_title(exp: ExperimentData, group: Any, runs: pd.DataFrame, what: str) -> str:
    """'<experiment>: <what> | <group's values>, seed <s>' for a figure of one group's first seed."""
    label = group_label(exp.group_keys, group)
    seed = f", seed {runs.seed.iloc[0]}" if "seed" in runs.columns and exp.compare != "seed" else ""
    return f"{exp.name}: {what}" + (f" | {label}" if label else "") + seed


def first_seed(runs: pd.DataFrame, compare: str | None = None) -> pd.DataFrame:
    """The runs of the lowest seed: a figure of one run per compared value. All of them when the seeds are what is
    compared (--compare seed)."""
    if compare == "seed" or "seed" not in runs.columns:
        return runs
    return runs[runs.seed == runs.seed.min()]


def seed_count(runs: pd.DataFrame, compare: str | None) -> int:
    """How many seeds each compared value has in `runs` (1 when the seeds are what is compared)."""
    return 1 if compare == "seed" or "seed" not in runs.columns else int(runs.seed.nunique())


def same_variant(exp: ExperimentData, runs: pd.DataFrame, run: pd.Series) -> pd.DataFrame:
    """The runs of `runs` with `run`'s compared value: its seeds."""
    return next((v for _, v in compared_variants(exp, runs) if run.run_id in set(v.run_id)), runs.iloc[:0])


def eval_start_note(exp: ExperimentData, runs: pd.DataFrame, steps: Any) -> str:
    """What a figure of values recorded in eval mode must say when it shows step 0 of a run with a norm: batch
    norm's running statistics are still their initial values then, not its data's. '' otherwise."""
    if exp.config.get("record", {}).get("eval_mode", "train") != "eval" or not len(steps) or min(steps) > 0:
        return ""
    norms = runs["model.norm"] if "model.norm" in runs.columns else [exp.config.get("model", {}).get("norm")]
    if all(n in (None, "none", "identity") for n in norms):
        return ""
    return (
        "step 0 in eval mode: batch norm's running statistics are still their initial mean 0, variance 1, so step 0 "
        "is not the net with its data's statistics"
    )


def panel_grid(
    n: int, ncols: int, panel_h: float, top: float = 0.55, reuse: str | None = None, **kw: Any
) -> tuple[plt.Figure, np.ndarray]:
    """n panels in the fewest rows of at most ncols, as few columns as those rows need (4 panels of at most 3 a row:
    2 x 2, not 3 + 1), the figure WIDTH wide; unused panels hidden."""
    nrows = math.ceil(n / max(1, min(ncols, n)))
    ncols = max(1, math.ceil(n / nrows))
    height = panel_h * nrows + top + 0.5
    fig, axs = subplots(nrows, ncols, (WIDTH, height), reuse, **kw)
    for ax in axs.ravel()[n:]:
        ax.set_visible(False)
    return fig, axs


REUSABLE: dict[tuple, tuple[plt.Figure, Any]] = {}  # per process: a worker draws many alike figures


def subplots(
    nrows: int, ncols: int, size: tuple[float, float], reuse: str | None = None, **kw: Any
) -> tuple[plt.Figure, np.ndarray]:
    """plt.subplots; with `reuse` (a kind of figure), the figure of an earlier call with the same layout, emptied:
    making the axes and their ticks is most of the cost of a figure of small multiples. A reused figure stays
    open (close_figure closes the others)."""
    key = (reuse, nrows, ncols, size, tuple(sorted(kw.items())))
    if reuse is not None and key in REUSABLE:
        fig, axs = REUSABLE[key]
        empty_figure(fig)
        return fig, axs
    fig, axs = plt.subplots(nrows, ncols, figsize=size, squeeze=False, **kw)
    if reuse is not None:
        REUSABLE[key] = (fig, axs)
    return fig, axs


def empty_figure(fig: plt.Figure) -> None:
    """Take back everything a drawing function adds to a figure of subplots, keeping the axes and their ticks."""
    for artist in [*fig.texts, *fig.legends]:
        artist.remove()
    fig.suptitle("")
    for ax in fig.axes:
        for artist in [*ax.patches, *ax.lines, *ax.texts, *ax.collections, *ax.images]:
            artist.remove()
        ax.set_visible(True)
        ax.set_facecolor("white")
        ax.set_title("")
        ax.set_xlabel("")
        ax.set_ylabel("")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(matplotlib.ticker.AutoLocator())
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.relim()
        ax.set_autoscale_on(True)


def close_figure(fig: plt.Figure) -> None:
    if not any(fig is f for f, _ in REUSABLE.values()):
        plt.close(fig)


def note(ax: plt.Axes, x: float, y: float, text: str, **kw: Any) -> None:
    """Text in axes coordinates; small, in the warning colour unless told otherwise."""
    ax.text(x, y, text, transform=ax.transAxes, **{"fontsize": 7, "color": BROKEN, **kw})


PLAIN = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 100, 1e+06: no mathtext, which is slow to draw


def fitted_suptitle(fig: plt.Figure, text: str, size: float | None = None, **kw: Any) -> None:
    """The figure's title at font size `size` (None: matplotlib's), or smaller where one line of it would not fit
    the figure's width."""
    title = fig.suptitle(text, **({"fontsize": size} if size else {}), **kw)
    for _ in range(4):  # text width is not quite proportional to the size (hinting): shrink until it fits
        width = title.get_window_extent(fig.canvas.get_renderer()).width
        if width <= 0.98 * fig.bbox.width or title.get_fontsize() <= 6.0:
            break
        title.set_fontsize(max(6.0, title.get_fontsize() * 0.97 * fig.bbox.width / width))


def title_notes(fig: plt.Figure, lines: list[str], x: float, y_inches: float, **kw: Any) -> int:
    """The non-empty `lines` under a figure's title, each wrapped to the figure's width, `y_inches` below its top
    edge (small, gray); returns how many lines of text that is."""
    text = "\n".join(textwrap.fill(line, NOTE_WIDTH) for line in lines if line)
    if text:
        fig.text(x, 1 - y_inches / fig.get_figheight(), text, va="top", fontsize=7, color="#444444", **kw)
    return text.count("\n") + 1 if text else 0


NOTE_WIDTH = 165  # characters of a 7-point line across a WIDTH-wide figure


class FewLogTicks(matplotlib.ticker.LogLocator):
    """Log ticks at 1, 2 and 5 of each decade over a short range (so that a range within one decade still has
    labelled ticks), at 1 and 3 over up to three decades, at powers of ten beyond: about six ticks at most."""

    def tick_values(self, vmin: float, vmax: float):
        decades = abs(math.log10(vmax / vmin)) if vmin > 0 and vmax > 0 else math.inf
        subs = (1.0, 2.0, 5.0) if decades < 1.3 else (1.0, 3.0) if decades < 3 else (1.0,)
        self.set_params(subs=subs, numticks=6)
        return super().tick_values(vmin, vmax)


def layer_color(layer: int, depth: int) -> tuple:
    """Layer 1 dark to the last layer light, on viridis short of its palest yellow (hard to see on white)."""
    return plt.get_cmap("viridis")(0.85 * (layer - 1) / max(depth - 1, 1))


def log_y(ax: plt.Axes) -> None:
    """A log y axis whose ticks read as plain numbers (FewLogTicks), without minor labels (mathtext is slow to draw
    and hard to read)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FewLogTicks())
    ax.yaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def percent(share: float) -> str:
    """A share that is never shown as 0% when something is there."""
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


def spans_decades(values: list[float] | np.ndarray) -> bool:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(pos) and max(pos) / min(pos) > 100


def step_span(exp: ExperimentData, steps: pd.Series) -> tuple[float, float]:
    """A figure's step axis: from the first to the last step of `steps` (a table's steps over the experiment's runs),
    to the training's last step where that is one step (every run diverged after its first record)."""
    lo, hi = (float(steps.min()), float(steps.max())) if len(steps) else (0.0, 0.0)
    if hi <= lo:
        hi = max(lo + 1.0, float(exp.config.get("train", {}).get("steps") or 0))
    return lo, hi


def padded(span: tuple[float, float]) -> tuple[float, float]:
    """A step axis's limits with 2% room on the left, so that what is drawn at the first step is not on the spine."""
    return span[0] - 0.02 * (span[1] - span[0]), span[1]


def diverged_band(ax: plt.Axes, start: float, end: float, text: str, size: float) -> None:
    """The steps from a run's divergence to the end of the step axis: a hatched band with `text` in it."""
    ax.axvspan(start, end, facecolor="#fbe9e1", edgecolor="#efb9a3", hatch="///", lw=0)
    ax.text(
        (start + end) / 2,
        0.5,
        text,
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="center",
        fontsize=size,
        color=BROKEN,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
    )


HATCHES = ("////", "\\\\\\\\", "||||", "----", "xxxx")  # one direction per series: crossing bands keep both colours


def spread_band(ax: plt.Axes, x: Any, lo: Any, hi: Any, color: str, k: int) -> None:
    """The band of series k (a range over seeds, or along the gradient): hatched in its colour, the hatching's
    direction its own, nothing filled; where two series' bands cross, both colours' lines show, not a blend of the two
    that reads as a third series."""
    ax.fill_between(x, lo, hi, facecolor="none", edgecolor=color, hatch=HATCHES[k % len(HATCHES)], lw=0, alpha=0.45)


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (steps or layers), so that a heatmap's axis is numeric."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[centres[0] - (mid[0] - centres[0])], mid, [centres[-1] + (centres[-1] - mid[-1])]])
