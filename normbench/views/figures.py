"""THE table of figures: one entry per kind, what `normbench plot` draws and the HTML report shows, from it only.

    for fig in planned(exp, point="post_act"):           # the figures an experiment's results give, as objects
        fig.kind, fig.group, fig.point, fig.path("png"), fig.caption()

A kind (FigureKind) says which function draws it, whether there is one figure for the whole experiment or one per
group of runs (every grid key but the compared one and seed), one per recorded point (--point) or not, which plot
option asks for it (--overlay, --ridge, --animate; none: always drawn), when the results give it (`applies`: the
landscape only where its runs measured it), where it stands in the order of costs (the costliest drawn first, so
that parallel workers finish together), its file name and its caption. A new figure is one entry here and one
drawing function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from normbench.labels import group_slug, group_title
from normbench.points import ALL as ALL_POINTS
from normbench.points import WORDS as POINT_WORDS
from normbench.views import curves, distributions, optimization, over_time, units
from normbench.views.data import ExperimentData, PlotError, numeric_axes


@dataclass(frozen=True)
class FigureKind:
    name: str
    draw: Callable[..., Any]  # draw(exp, [group], [point], [key]) -> a matplotlib figure (animation: writes a GIF)
    scope: Literal["experiment", "group"]
    rank: int  # the order of costs: lower first
    caption: Callable[[Figure], tuple[str, str]]  # (alt text, caption)
    per_point: bool = False  # one figure per recorded point shown (--point)
    option: str | None = None  # the plot option that asks for it; None: always drawn
    applies: Callable[[ExperimentData, pd.DataFrame], bool] = lambda exp, runs: True  # runs: the group's
    suffix: str | None = None  # its own file format; None: the format asked for

    def stem(self, fig: Figure) -> str:
        """The file name without its suffix: <kind>[_<point>][_<key>][_<group>]."""
        parts = [self.name, fig.point, fig.key and fig.key.split(".")[-1], fig.slug]
        return "_".join(p for p in parts if p)


@dataclass(frozen=True)
class Figure:
    """One figure of an experiment: its kind's name, its group (the grid values; None for a figure of the whole
    experiment) with their slug and readable title, its point and, for final_vs, its grid key."""

    kind: str
    group: Any = None
    slug: str | None = None
    title: str = ""
    point: str | None = None
    key: str | None = None

    @property
    def spec(self) -> FigureKind:
        return KINDS[self.kind]

    @property
    def stem(self) -> str:
        return self.spec.stem(self)

    def path(self, fmt: str) -> Path:
        """Its file, relative to the figures folder."""
        return Path(f"{self.stem}.{self.spec.suffix or fmt}")

    def caption(self) -> tuple[str, str]:
        return self.spec.caption(self)

    def args(self) -> dict[str, Any]:
        """The drawing function's arguments after the experiment."""
        args: dict[str, Any] = {} if self.spec.scope == "experiment" else {"group": self.group}
        if self.point:
            args["point"] = self.point
        if self.key:
            args["key"] = self.key
        return args


# -- captions: (alt text, caption) ---------------------------------------------------------------------------------

WHEN = "at the first and the last recorded step"


def _where(fig: Figure) -> str:
    return POINT_WORDS.get(fig.point, (fig.point or "").replace("_", " "))


def _cost_caption(fig: Figure) -> tuple[str, str]:
    return "Cost curves", (
        "Cost curves: the loss against the training step, one colour per compared value (model.norm by "
        "default), one panel per group of the other grid keys; the seeds that did not diverge as their mean with "
        "a min-max band, which set the y range. A diverged seed is a thin line up to its last finite loss, marked "
        "there (at the axis's edge, with its value, when it lies beyond the range)."
    )


def _final_vs_caption(fig: Figure) -> tuple[str, str]:
    key = (fig.key or "").split(".")[-1]
    return f"Final numbers against {key}", (
        f"Final numbers against {key}: final training loss (and, for classification, test accuracy), mean "
        "over seeds with a min-max band, one line per compared value; diverged and failed runs are counted, "
        "not averaged."
    )


def _hist_caption(fig: Figure) -> tuple[str, str]:
    where, group = _where(fig), fig.title
    return f"Histograms {where} {WHEN}, {group}", (
        f"Histograms of the values {where} {WHEN}: one row per compared value, one column per layer (layer 0: "
        f"the input), one seed (the figure says how far the other seeds' histograms are from it); {group}. "
        "Values outside a panel's range and NaN/inf values are shown, not dropped."
    )


def _overlay_caption(fig: Figure) -> tuple[str, str]:
    where, group = _where(fig), fig.title
    return f"Histograms {where} {WHEN}, compared runs overlaid, {group}", (
        f"Histograms of the values {where} {WHEN} with the compared runs on the same axes (--overlay), each an "
        f"outline in its colour over the union of their ranges: one row per step, one column per layer, one "
        f"seed; {group}. The grid with one run per row is drawn beside it."
    )


def _ridge_caption(fig: Figure) -> tuple[str, str]:
    where, group = _where(fig), fig.title
    return f"Histograms {where} at every recorded step, {group}", (
        f"Ridge plot: the histograms of the values {where} at every recorded step, offset upwards, one seed; {group}."
    )


def _animation_caption(fig: Figure) -> tuple[str, str]:
    where, group = _where(fig), fig.title
    return f"Histograms {where} over training, {group}", (
        f"Animation: the histogram grid of the values {where} at every recorded step, one frame each; {group}."
    )


def _dist_caption(fig: Figure) -> tuple[str, str]:
    return f"Distributions over training, {fig.title}", (
        f"Distributions over training: the 1st, 20th, 50th, 80th and 99th percentiles of each layer's values "
        f"against the step, one row per point and compared value, every panel with its own y range; one seed, "
        f"with the median's range over the seeds dotted; {fig.title}."
    )


def _grad_caption(fig: Figure) -> tuple[str, str]:
    return f"Gradient norms, {fig.title}", (
        "Gradient norms of each layer against the step and, where recorded, internal covariate shift as "
        f"Santurkar et al. measure it (the cosine between a layer's weight gradient before and after the earlier "
        f"layers' update); {fig.title}."
    )


def _units_caption(fig: Figure) -> tuple[str, str]:
    return f"Dead and saturated units, {fig.title}", (
        f"Dead units and saturated values of each hidden layer against the step, one row per compared value "
        f"(one seed), and beside it every seed's values at the end (their range); {fig.title}."
    )


def _landscape_caption(fig: Figure) -> tuple[str, str]:
    return f"Loss landscape along the gradient, {fig.title}", (
        "The loss landscape along the gradient (Santurkar et al. 2018): at each measured step, the range of the "
        "loss over steps of several sizes along the gradient, the largest change of the gradient there and the "
        f"effective beta-smoothness, one seed; {fig.title}. Narrower and lower is smoother."
    )


def _running_caption(fig: Figure) -> tuple[str, str]:
    return f"Running statistics, {fig.title}", (
        "Batch norm's running statistics against the training set's, per layer, and the training-set loss in "
        "train mode, eval mode and, at the end, with recomputed statistics (precise BN's, and the population's), "
        f"one seed; {fig.title}."
    )


def _time_units_caption(fig: Figure) -> tuple[str, str]:
    return f"Saturated or dead units over time, {fig.title}", (
        "Saturated values after the activation (the share with |a| above record.saturation_threshold; dead units, "
        "exactly 0 in every real sequence, where the activation has no saturated region) per layer and time step "
        "t at the last recorded step, over the real sequences at t (gray: none), one panel per variant, one seed, "
        f"one colour scale from 0 to 1; {fig.title}."
    )


def _time_grad_caption(fig: Figure) -> tuple[str, str]:
    return f"Gradient through time, {fig.title}", (
        "The norm of the loss's gradient with respect to the hidden state h_t against the time step t, on a log "
        "scale, at the first and the last recorded step, one line per variant, one seed: falling towards t = 0 is "
        f"the gradient vanishing through time, rising is it exploding; {fig.title}."
    )


def _time_dist_caption(fig: Figure) -> tuple[str, str]:
    return f"Values after the norm over time, {fig.title}", (
        "The values after the norm against the time step t at the last recorded step: the median, the 20-80 and "
        "the 1-99 percentile bands over the real sequences and the units at t, one panel per variant (each with "
        f"its own y range), one seed; {fig.title}."
    )


# -- when the results give a figure ---------------------------------------------------------------------------------


def _has_histograms(exp: ExperimentData, runs: pd.DataFrame) -> bool:
    return not exp.tables["histograms"].empty


def _has_gradients(exp: ExperimentData, runs: pd.DataFrame) -> bool:
    layers = exp.tables["layers"]
    return not layers.empty and ("backprop_norm" in layers.columns or "grad_norm" in layers.columns)


def _has_layers(exp: ExperimentData, runs: pd.DataFrame) -> bool:
    return not exp.tables["layers"].empty


def _has_running_stats(exp: ExperimentData, runs: pd.DataFrame) -> bool:
    layers = exp.tables["layers"]
    if layers.empty or "running_mean_err" not in layers.columns:
        return False
    return bool(layers[layers.run_id.isin(runs.run_id)].running_mean_err.notna().any())


def _has_landscape(exp: ExperimentData, runs: pd.DataFrame) -> bool:
    table = exp.tables["landscape"]
    return not table.empty and bool(table.run_id.isin(runs.run_id).any())


def _has_time(exp: ExperimentData, runs: pd.DataFrame) -> bool:
    """The group's runs recorded over time (a sequence model with record.time)."""
    table = exp.tables.get("time", pd.DataFrame())
    return not table.empty and bool(table.run_id.isin(runs.run_id).any())


def _has_numeric_axis(exp: ExperimentData, runs: pd.DataFrame) -> bool:
    return bool(numeric_axes(exp))


# The report shows the figures in this order (the experiment's, then each group's).
FIGURES: tuple[FigureKind, ...] = (
    FigureKind("cost", curves.cost, "experiment", 7, _cost_caption),
    FigureKind("final_vs", curves.final_vs, "experiment", 9, _final_vs_caption, applies=_has_numeric_axis),
    FigureKind("hist", distributions.hist, "group", 2, _hist_caption, per_point=True, applies=_has_histograms),
    FigureKind(
        "overlay",
        distributions.overlay,
        "group",
        2,
        _overlay_caption,
        per_point=True,
        option="overlay",
        applies=_has_histograms,
    ),
    FigureKind(
        "ridge",
        distributions.ridge,
        "group",
        1,
        _ridge_caption,
        per_point=True,
        option="ridge",
        applies=_has_histograms,
    ),
    FigureKind(
        "anim",
        distributions.animation,
        "group",
        0,
        _animation_caption,
        per_point=True,
        option="animate",
        applies=_has_histograms,
        suffix="gif",
    ),
    FigureKind("dist", distributions.dist, "group", 3, _dist_caption, applies=_has_histograms),
    FigureKind("grad", optimization.grad, "group", 4, _grad_caption, applies=_has_gradients),
    FigureKind("units", units.units, "group", 8, _units_caption, applies=_has_layers),
    FigureKind("landscape", optimization.landscape, "group", 6, _landscape_caption, applies=_has_landscape),
    FigureKind("running", optimization.running, "group", 5, _running_caption, applies=_has_running_stats),
    FigureKind("time_units", over_time.time_units, "group", 5, _time_units_caption, applies=_has_time),
    FigureKind("time_grad", over_time.time_grad, "group", 5, _time_grad_caption, applies=_has_time),
    FigureKind("time_dist", over_time.time_dist, "group", 5, _time_dist_caption, applies=_has_time),
)
KINDS = {k.name: k for k in FIGURES}
OPTIONS = ("overlay", "ridge", "animate")  # the plot options that ask for more figures


def shown_points(exp: ExperimentData, point: str) -> list[str]:
    """The points the per-point figures show: `point`, or every recorded one for 'all'. PlotError when `point` was
    not recorded."""
    hists = exp.tables["histograms"]
    present = set(hists.point.unique()) if not hists.empty else set()
    if point == "all":
        return [p for p in ALL_POINTS if p in present]
    if point not in present and not hists.empty:
        raise PlotError(f"--point {point!r} was not recorded in {exp.name}; recorded: {', '.join(sorted(present))}")
    return [point]


def planned(exp: ExperimentData, point: str = "post_act", options: tuple[str, ...] = ()) -> list[Figure]:
    """The figures of `exp`: the experiment's, then each group's, kinds in the table's order (a group's per-point
    kinds point by point); `options` are the plot options given (OPTIONS)."""
    kinds = [k for k in FIGURES if k.option is None or k.option in options]
    points = shown_points(exp, point)
    out = []
    for kind in (k for k in kinds if k.scope == "experiment" and k.applies(exp, exp.runs)):
        keys = numeric_axes(exp) if kind.name == "final_vs" else [None]
        out += [Figure(kind.name, key=key) for key in keys]
    for key, runs in exp.groups():
        slug, title = group_slug(exp.group_keys, key), group_title(exp.group_keys, key) or "all runs"
        mine = [k for k in kinds if k.scope == "group" and k.applies(exp, runs)]
        for p in points:
            out += [Figure(k.name, key, slug, title, point=p) for k in mine if k.per_point]
        out += [Figure(k.name, key, slug, title) for k in mine if not k.per_point]
    return out
