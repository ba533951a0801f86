"""What happens inside a network while it trains: losses, histograms, dead and saturated units, gradients.

    rec = Recorder(cfgs, kernel, splits)     # M runs trained together by one kernel (engine/)
    rec.losses(step, [0, 1, ...]); rec.layers(step, [...]); rec.tables(j)   # run j's curves, layers, histograms

Points recorded in every recorded layer (models.recorded_layers), on the evaluation set:
    pre_norm       the input of the layer's norm  (fc output Wx+b, or the activation output if placement=after)
    post_norm      the output of the layer's norm (= pre_norm when norm is none)
    post_act       the output of the activation   (layer 0, the input, has the identity as activation)
and, in every hidden layer (1..depth), the gradients of the probe's loss (a mean over its samples):
    grad_pre_norm  d(loss)/d(pre_norm), every sample and channel: the backpropagated gradient
    grad_weight    d(loss)/d(W), the layer's weight matrix or conv kernel

Optional measurements (record.*): internal covariate shift (`ics_every`, Recorder.ics), the loss landscape along the
gradient (`landscape_every`, Recorder.landscape), how far batch norm's running statistics are from the training
set's (`running_stats`, Recorder.layers) and the losses with recomputed running statistics, precise BN's and
the population's (`precise_bn`, Recorder.precise).

Histograms have equal bins over a range, fixed (record.ranges.<point>: [lo, hi]) or chosen from the histogram's
own values (`auto`: auto_ranges), and count, beside the bins, the finite values below and above the range and the
NaN and inf values: counts + below + above + nan + inf == n, always. Nothing silently falls out of a picture (the
tutorial's own histograms dropped every NaN of a diverged net and looked "empty").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from normbench.registry import ACTIVATIONS

if TYPE_CHECKING:
    from normbench.config import ModelConfig, RunConfig
    from normbench.engine.base import Kernel  # the interface the recorder measures through (base imports Probe)

Bounds = float | Sequence[float]

POINTS = ("pre_norm", "post_norm", "post_act")  # the forward points, in every recorded layer
GRAD_POINTS = ("grad_pre_norm", "grad_weight")  # the gradient points, in every hidden layer


# ---------------------------------------------------------------------------------------------------------------
# Measurements on plain tensors


@dataclass
class Histogram:
    counts: np.ndarray  # (bins,) int64; the last bin includes its right edge, as numpy.histogram
    lo: float
    hi: float
    below: int  # finite values < lo
    above: int  # finite values > hi
    nan: int
    inf: int  # +inf and -inf
    n: int  # all values
    mean: float  # over finite values (NaN if none)
    std: float
    min: float
    max: float


def histogram(values: torch.Tensor, lo: float, hi: float, bins: int) -> Histogram:
    """The histogram of all of `values` over [lo, hi] in `bins` equal bins, the last one closed, as numpy.histogram
    (bins found by arithmetic in float64: a value within rounding of an inner edge may land one bin off numpy's)."""
    return histograms_stacked(values.reshape(1, -1), lo, hi, bins)[0]


def histograms_stacked(values: torch.Tensor, lo: Bounds, hi: Bounds, bins: int) -> list[Histogram]:
    """histogram() of each values[m] (M, ...) at once (torch.histc has neither a batch dimension nor a vmap rule):
    each value's bin by arithmetic in float64, then one bincount over (model, slot) counts them all. Each pass
    over the values is chosen for speed on the CPU (torch.bucketize, aminmax and var were 3-25x slower here).
    `lo` and `hi`: one range for every model, or one per model (sequences of M floats, as auto_ranges gives)."""
    flat = values.detach().reshape(values.shape[0], -1).cpu()  # counted on the CPU, whatever the device
    v = flat.to(torch.float64)  # (M, K); exact for float32 values
    m, k = v.shape
    los = [float(lo)] * m if isinstance(lo, int | float) else [float(x) for x in lo]
    his = [float(hi)] * m if isinstance(hi, int | float) else [float(x) for x in hi]
    lo, hi = (torch.tensor(x, dtype=torch.float64).reshape(m, 1) for x in (los, his))
    total = v.sum(1)
    all_finite = bool(torch.isfinite(total).all())  # a float64 sum of float32 values overflows only on inf or NaN
    if all_finite:
        nan = n_inf = torch.zeros(m, dtype=torch.int64)
        n_fin = torch.full((m,), k)
    else:  # NaN and inf are counted apart, moved below the range (-inf: lo - 1 is lo itself for |lo| > 2^53), then
        # taken out of `below`
        finite = torch.isfinite(v)
        nan = torch.isnan(v).sum(1)
        n_fin = finite.sum(1)
        n_inf = k - n_fin - nan
        total = torch.where(finite, v, 0.0).sum(1)
        v = torch.where(finite, v, -torch.inf)
    # Slot 0: below lo; 1..bins: the bins, the last one closed (hi belongs to it); bins + 1: above hi. v < lo
    # exactly when (v - lo) * scale < 0, so `below` is exact; `above` is decided by comparing with hi itself.
    slot = (v - lo).mul_(bins / (hi - lo)).floor_().clamp_(-1, bins - 1).add_(1)
    slot.masked_fill_(v > hi, bins + 1)
    centred = [j for j in range(m) if los[j] == -his[j]]
    if centred and bins % 2 == 0:  # 0 is the inner edge bins/2 exactly: its own bin, whatever the scale's rounding
        rows = torch.tensor(centred)
        slot[rows] = slot[rows].masked_fill_(v[rows] == 0, bins // 2 + 1)
    slot = slot.long().add_(torch.arange(m)[:, None] * (bins + 2))
    table = torch.bincount(slot.view(-1), minlength=m * (bins + 2)).view(m, bins + 2)
    counts, below, above = table[:, 1 : bins + 1], table[:, 0] - (k - n_fin), table[:, bins + 1]
    mean = total / n_fin.clamp(min=1)
    d = v - mean[:, None]
    if all_finite:
        vmin, vmax = flat.amin(1).double(), flat.amax(1).double()
    else:
        d = torch.where(finite, d, 0.0)
        vmin = torch.where(finite, v, torch.inf).amin(1)
        vmax = torch.where(finite, v, -torch.inf).amax(1)
    std = (d.square_().sum(1) / n_fin.clamp(min=1)).sqrt()
    has = (n_fin > 0).tolist()
    nan_or = lambda t: [x if h else float("nan") for x, h in zip(t.tolist(), has, strict=True)]  # noqa: E731
    mean, std, vmin, vmax = nan_or(mean), nan_or(std), nan_or(vmin), nan_or(vmax)
    below, above, nan, n_inf = below.tolist(), above.tolist(), nan.tolist(), n_inf.tolist()
    counts = counts.numpy()
    return [
        Histogram(counts[j], los[j], his[j], below[j], above[j], nan[j], n_inf[j], k, mean[j], std[j], vmin[j], vmax[j])
        for j in range(m)
    ]


UNIT_METRICS = ("dead_fraction", "saturated_fraction", "zero_fraction")


def unit_metrics(act: torch.Tensor, activation: str, threshold: float) -> dict[str, float]:
    """Dead and saturated units of one layer's post-activation values `act` (N, C) or (N, C, H, W), N = evaluation
    samples (a conv unit is a channel, over every position of every sample).

    dead_fraction       units whose output is exactly 0 for every sample
    saturated_fraction  values in the activation's saturated region (NaN when the activation has none)
    zero_fraction       values exactly 0
    All three are NaN when a value is NaN or inf: a diverged layer is neither dead nor alive.
    """
    a = act.detach()
    by_channel = a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 1).reshape(1, a.shape[1], -1)  # (1, C, N*H*W)
    return unit_metrics_stacked(by_channel, activation, threshold)[0]


def unit_metrics_stacked(act: torch.Tensor, activation: str, threshold: float) -> list[dict[str, float]]:
    """unit_metrics of each of M models at once, from their post-activation values `act` (M, C, K): channels by
    values (every sample, and every position of a conv map), the layout of a kernel's Probe."""
    a = act.detach().to(torch.float64)
    finite = torch.isfinite(a).flatten(1).all(1).tolist()
    zero = a == 0
    dead = zero.all(2).double().mean(1).tolist()
    zeros = zero.double().mean((1, 2)).tolist()
    saturated = ACTIVATIONS.get(activation).saturated
    sat = saturated(a, threshold).double().mean((1, 2)).tolist() if saturated else [float("nan")] * len(a)
    nan = float("nan")
    return [
        {"dead_fraction": d, "saturated_fraction": s, "zero_fraction": z} if ok else dict.fromkeys(UNIT_METRICS, nan)
        for d, s, z, ok in zip(dead, sat, zeros, finite, strict=True)
    ]


# ---------------------------------------------------------------------------------------------------------------
# Automatic histogram ranges

OUTSIDE = 0.01  # the share of a histogram's finite values that an automatic range may leave outside


@dataclass(frozen=True)
class Shape:
    """What is known of a point's values before seeing them, and so fixed in its automatic range: an end where the
    values are bounded (ReLU's output >= 0; tanh's in [-1, 1]), or a centre at 0 (a norm's output, a gradient)."""

    lower: float | None = None
    upper: float | None = None
    centred: bool = False


FREE, CENTRED = Shape(), Shape(centred=True)


def after_activation(activation: str, given: Shape) -> Shape:
    """The shape of an activation's output, from the registry (nn/activations.py): its bounds where it has any; an
    unbounded odd activation (identity) keeps its input's shape; any other (leaky_relu) leaves none."""
    act = ACTIVATIONS.get(activation)
    if act.bounds != (None, None):
        return Shape(*act.bounds)
    return given if act.odd else FREE


def point_shape(model: ModelConfig, layer: int, point: str) -> Shape:
    """The shape of a recorded point's values. Wx+b and the data are free; a norm's output is centred (zero mean and
    unit variance for the centring norms, unit RMS for rms: its range is symmetric, so a shift by beta or a skew
    shows); an activation's output has the activation's shape; gradients are centred (either sign, any scale)."""
    if point in GRAD_POINTS:
        return CENTRED
    normed = model.norm != "none" and (layer > 0 or model.normalize_input)
    if layer == 0:  # the data, then maybe the input norm, then the identity
        return {"pre_norm": FREE}.get(point, CENTRED if normed else FREE)
    if model.placement == "before":  # fc -> norm -> act
        post_norm = CENTRED if normed else FREE
        shapes = {"pre_norm": FREE, "post_norm": post_norm, "post_act": after_activation(model.activation, post_norm)}
        return shapes[point]
    act = after_activation(model.activation, FREE)  # fc -> act -> norm: pre_norm and post_act are the act's output
    return CENTRED if point == "post_norm" and normed else act


def auto_ranges(values: torch.Tensor, shape: Shape = FREE) -> tuple[list[float], list[float]]:
    """A histogram range [lo, hi] for each values[m] (M, ...), chosen from its finite values (NaN and inf are
    counted apart by the histogram, never ranged over).

    The rule: the range of the point's `shape` that leaves out at most 1% of the finite values (OUTSIDE), by their
    quantiles (numpy.quantile's default: linear interpolation between order statistics):
        free                [q(0.5%), q(99.5%)]              the 1% split between the two tails
        centred             [-a, a], a = q(99%) of |v|       0 stays in the middle
        lower bound b       [b, q(99%)]                      ReLU [0, q], ELU [-1, q]: no value is below b
        upper bound c       [q(1%), c]
        both bounds         exactly the bounds               tanh [-1, 1], sigmoid [0, 1]: saturation shows
    then with its free ends rounded outward (rounded_out: three significant digits of the width, less than 1% of
    it added on a side), so that edges read well and values that differ only by rounding (float32 and float64, the
    two kernels) get the same range and the same bins. Quantiles rather than the min and max, since one extreme
    value (a single exploding unit) would otherwise squeeze every other value into one bin; 1% because it spends
    the bins on the bulk while leaving out few values (150 of a layer's 15,000 in the tutorial's net): a heavier tail
    shows in `below`/`above` and in `min`/`max`, which are always recorded.

    Degenerate cases. Where that range is empty (most values equal, e.g. a nearly dead ReLU layer, 0 but for a few
    values), the same rule with the extreme values instead of the quantiles (min and max, max |v|), rounded out
    alike; where that is still empty (every finite value equal to some v), [v - |v|, v + |v|], or [-1, 1] for v = 0
    ([b, b + 1] or [c - 1, c] with a bound); with no finite value at all (a diverged layer), as for v = 0.

    Cost: one partial sort (torch.topk) of the extreme 1% of each model's values per free end, none between two
    bounds. Measured for 16 models x 15,000 values on one CPU thread: 1.2-1.7 ms, beside 2.8 ms for the histogram
    itself; torch.quantile and a full sort took 17 ms, torch.kthvalue (two per end) 10 ms."""
    flat = values.detach().reshape(values.shape[0], -1).cpu()
    m = flat.shape[0]
    if shape.lower is not None and shape.upper is not None:
        return [shape.lower] * m, [shape.upper] * m
    if shape.centred and shape.lower is None and shape.upper is None:
        flat = flat.abs()
    if bool(torch.isfinite(flat.sum(1)).all()):  # every value finite (a sum overflows only on inf, NaN or huge ones)
        ends = _ends(flat, shape)
    else:
        ends = [_ends(row[ok][None], shape)[0] for row, ok in zip(flat, torch.isfinite(flat), strict=True)]
    lows, highs = [], []
    for by_quantile, by_extreme, v in ends:
        lo, hi = by_quantile if by_quantile[0] < by_quantile[1] else by_extreme
        lo, hi = rounded_out(shape, lo, hi) if lo < hi else _fallback(shape, v)
        lows.append(lo)
        highs.append(hi)
    return lows, highs


def _ends(flat: torch.Tensor, shape: Shape) -> list[tuple[tuple[float, float], tuple[float, float], float]]:
    """For each row of finite values (m, n) (|v| for a centred shape): the range by the quantiles, the range by the
    extreme values, and one value (NaN where n = 0)."""
    if shape.centred and shape.lower is None and shape.upper is None:
        a, amax = _quantile(flat, 1 - OUTSIDE)
        return [((-q, q), (-e, e), e) for q, e in zip(a, amax, strict=True)]
    if shape.lower is not None:
        q, vmax = _quantile(flat, 1 - OUTSIDE)
        return [((shape.lower, x), (shape.lower, e), e) for x, e in zip(q, vmax, strict=True)]
    if shape.upper is not None:
        q, vmin = _quantile(flat, OUTSIDE)
        return [((x, shape.upper), (e, shape.upper), e) for x, e in zip(q, vmin, strict=True)]
    (q_lo, vmin), (q_hi, vmax) = _quantile(flat, OUTSIDE / 2), _quantile(flat, 1 - OUTSIDE / 2)
    return [((a, b), (c, d), c) for a, b, c, d in zip(q_lo, q_hi, vmin, vmax, strict=True)]


def _quantile(flat: torch.Tensor, q: float) -> tuple[list[float], list[float]]:
    """The q-quantile of each row (m, n) and the row's extreme value on that side (its min for q < 1/2, else its
    max); NaN for n = 0. As numpy.quantile: at position p = q (n - 1) of the sorted row x, x[i] + (p - i)
    (x[i + 1] - x[i]) with i = floor(p). Only the values from x[0] to x[i + 1] (from x[i] to x[n - 1] for q >= 1/2)
    are sorted, by torch.topk: about 1% of the row."""
    m, n = flat.shape
    if n == 0:
        return [float("nan")] * m, [float("nan")] * m
    p = q * (n - 1)
    i = min(int(p), n - 1)
    j, frac = min(i + 1, n - 1), p - i
    if q < 0.5:
        x = flat.topk(j + 1, dim=1, largest=False).values.to(torch.float64)  # x[0] <= ... <= x[j]
        a, b = x[:, i], x[:, j]
    else:
        x = flat.topk(n - i, dim=1).values.to(torch.float64)  # x[n - 1] >= ... >= x[i]: x[t] at n - 1 - t
        a, b = x[:, n - 1 - i], x[:, n - 1 - j]
    return (a + frac * (b - a)).tolist(), x[:, 0].tolist()


def rounded_out(shape: Shape, lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] (lo < hi) widened to the next multiples of s = 10^(floor(log10(hi - lo)) - 2), three significant
    digits of its width (a bound of the shape stays as it is): each end moves out by less than 1% of the width."""
    step = 10.0 ** (math.floor(math.log10(hi - lo)) - 2)
    if not (math.isfinite(step) and step > 0):
        return lo, hi
    if shape.lower is None:
        low = math.floor(lo / step) * step
        lo = low if low <= lo else low - step  # a quotient rounded up past an exact multiple
    if shape.upper is None:
        high = math.ceil(hi / step) * step
        hi = high if high >= hi else high + step
    return lo, hi


def _fallback(shape: Shape, v: float) -> tuple[float, float]:
    """The range when every finite value equals v (NaN: there is none)."""
    if shape.lower is not None:
        return shape.lower, shape.lower + 1.0
    if shape.upper is not None:
        return shape.upper - 1.0, shape.upper
    if v != v or v == 0 or shape.centred:  # a centred shape reaches here only when every value is 0
        return -1.0, 1.0
    return v - abs(v), v + abs(v)


# ---------------------------------------------------------------------------------------------------------------
# The recorder of M runs trained together (M = 1 for a run alone)

# Switchable norm's importance weights, recorded per layer (NaN for every other norm).
IMPORTANCE = tuple(f"sn_{what}_{kind}" for what in ("mean", "var") for kind in ("in", "ln", "bn"))
ICS = ("ics_l2", "ics_cos")  # internal covariate shift per hidden layer (Recorder.ics), NaN where not measured
RUNNING = ("running_mean_err", "running_var_err")  # running vs training-set statistics (record.running_stats)


@dataclass
class Probe:
    """What a kernel's recording pass sees, for all M models at once."""

    # (layer, point) -> (M, C, K): channels by values, for every point of POINTS in every recorded layer and
    # 'grad_pre_norm' (d(loss)/d(pre_norm), laid out as pre_norm) in every hidden layer
    points: dict[tuple[int, str], torch.Tensor]
    grad: torch.Tensor  # (M, P) gradient of each model's loss (a mean over the probe's samples) on those samples
    importance: dict[int, torch.Tensor]  # hidden layer -> (M, len(IMPORTANCE)), NaN without switchable norm


@contextmanager
def restored(*tensors: torch.Tensor) -> Iterator[list[torch.Tensor]]:
    """Change `tensors` in place inside (the parameters, the running statistics: no leaf of any graph, the autograd
    kernel's modules hold views of them); after, each holds its values again, bit for bit. Yields copies of them."""
    saved = [t.clone() for t in tensors]
    try:
        yield saved
    finally:
        for t, s in zip(tensors, saved, strict=True):
            t.copy_(s)


def population_stats(pre_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel mean and unbiased variance (as PyTorch's running update takes it) of a norm's input (M, C, K),
    over its K values (every sample, and every position of a conv map), in float64: (M, C) each."""
    v = pre_norm.detach().to(torch.float64)
    return v.mean(2), v.var(2, unbiased=True)


def running_errors(
    running: tuple[torch.Tensor, torch.Tensor], population: tuple[torch.Tensor, torch.Tensor], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """How far running statistics (mean, var) (M, C) are from a population's, per model (M,):
        running_mean_err = sqrt(mean_c (mu_run - mu_pop)^2 / (var_pop + eps))       the mean's error, in population stds
        running_var_err  = sqrt(mean_c log((var_run + eps) / (var_pop + eps))^2)   the variance's, as a log ratio
    0 when they agree; 0.1 is a mean off by a tenth of a std, or a variance off by about 10%."""
    (mr, vr), (mp, vp) = (tuple(t.to(torch.float64) for t in pair) for pair in (running, population))
    mean_err = ((mr - mp).square() / (vp + eps)).mean(1).sqrt()
    var_err = ((vr + eps) / (vp + eps)).log().square().mean(1).sqrt()
    return mean_err, var_err


class Recorder:
    """Accumulates the tidy tables of each of M runs (docs/results-format.md has every column). Every
    measurement is taken for all models at once through the kernel, then split into each run's rows; a step is
    recorded at most once per run."""

    def __init__(self, cfgs: list[RunConfig], kernel: Kernel, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        self.cfgs, self.kernel, self.splits = cfgs, kernel, splits  # splits in the kernel's layout
        self.rc = cfgs[0].record
        self.rows: list[dict[str, list[dict[str, Any]]]] = [defaultdict(list) for _ in cfgs]
        self._done: set[tuple[str, int, int]] = set()

    def _todo(self, kind: str, step: int, which: list[int]) -> list[int]:
        todo = [j for j in which if (kind, step, j) not in self._done]
        self._done.update((kind, step, j) for j in todo)
        return todo

    def losses(self, step: int, which: list[int], train_loss: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Loss and accuracy on every split, with batch statistics (mode train) and running statistics (mode eval).
        `train_loss`: the training split's train-mode numbers when they are already known (the full batch)."""
        which = self._todo("losses", step, which)
        if not which:
            return
        for split in self.splits:
            for mode in ("train", "eval"):
                known = train_loss is not None and (split, mode) == ("train", "train")
                self._curve_rows(step, which, split, mode, mode, train_loss if known else None)

    def _curve_rows(
        self,
        step: int,
        which: list[int],
        split: str,
        mode: str,
        kernel_mode: str,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """The curves rows of one split, labelled `mode`: the kernel's losses and accuracies in `kernel_mode` (batch or
        running statistics), or the `known` ones."""
        x, y = self.splits[split]
        loss, acc = known if known is not None else self.kernel.evaluate(x, y, kernel_mode)
        loss, acc = loss.tolist(), acc.tolist()
        for j in which:
            self.rows[j]["curves"].append(
                {"step": step, "split": split, "mode": mode, "loss": loss[j], "accuracy": acc[j]}
            )

    def layers(self, step: int, which: list[int]) -> None:
        """Histograms of every point and the unit statistics of every hidden layer, from one forward and backward
        on the evaluation set (record.eval_split, record.eval_mode)."""
        which = self._todo("layers", step, which)
        if not which:
            return
        rc, kernel = self.rc, self.kernel
        probe = kernel.probe(*self.splits[rc.eval_split], rc.eval_mode)
        pick = torch.tensor(which, device=kernel.theta.device)
        picked: dict[int, torch.Tensor] = {}  # a tensor under several points (pre_norm = post_norm without a norm)
        for v in probe.points.values():
            picked.setdefault(id(v), v.index_select(0, pick))
        points = {key: picked[id(v)] for key, v in probe.points.items()}
        slices = kernel.layer_weights.items()
        grads = probe.grad.index_select(0, pick)
        points.update({(i, "grad_weight"): grads[:, s] for i, s in slices})
        hists = self._histograms(points)
        activation = self.cfgs[0].model.activation
        metrics = {
            i: unit_metrics_stacked(points[(i, "post_act")], activation, rc.saturation_threshold)
            for i in kernel.layer_weights
        }
        weight = {i: torch.linalg.vector_norm(kernel.theta[pick, s], dim=1).tolist() for i, s in slices}
        grad = {i: torch.linalg.vector_norm(grads[:, s], dim=1).tolist() for i, s in slices}
        backprop = {
            i: torch.linalg.vector_norm(points[(i, "grad_pre_norm")].flatten(1), dim=1).tolist() for i, _ in slices
        }
        importance = {i: v[pick.cpu()].tolist() for i, v in probe.importance.items()}
        same_pass = (rc.eval_split, rc.eval_mode) == ("train", "eval")  # the pass _running_errors needs: no second one
        running = self._running_errors(pick, probe if same_pass else None) if rc.running_stats else {}
        nan2 = [(math.nan, math.nan)] * len(which)
        for pos, j in enumerate(which):
            rows = self.rows[j]
            for (layer, point), h in sorted(hists.items()):
                rows["histograms"].append({"step": step, "layer": layer, "point": point, **h[pos].__dict__})
            for i in sorted(metrics):
                rows["layers"].append(
                    {
                        "step": step,
                        "layer": i,
                        **metrics[i][pos],
                        "grad_norm": grad[i][pos],
                        "backprop_norm": backprop[i][pos],
                        "weight_norm": weight[i][pos],
                        **dict(zip(IMPORTANCE, importance[i][pos], strict=True)),
                        **dict(zip(RUNNING, running.get(i, nan2)[pos], strict=True)),
                    }
                )

    def _running_errors(self, pick: torch.Tensor, probe: Probe | None = None) -> dict[int, list[tuple[float, float]]]:
        """running_errors of every layer with running statistics, for the picked models, against the statistics of
        the layer's input on the training split with the network in eval mode (the layers before on their running
        statistics too): the input the layer gets when the model is deployed, on the data it was trained on.
        `probe`: that very pass when the caller has it."""
        stats = self.kernel.running_stats()
        if not stats:
            return {}
        probe = probe or self.kernel.probe(*self.splits["train"], "eval")
        eps = self.cfgs[0].model.norm_eps
        out = {}
        for i, (mean, var) in stats.items():
            population = population_stats(probe.points[(i, "pre_norm")].index_select(0, pick))
            errors = running_errors((mean[pick], var[pick]), population, eps)
            out[i] = list(zip(*(e.tolist() for e in errors), strict=True))
        return out

    def _histograms(self, points: dict[tuple[int, str], torch.Tensor]) -> dict[tuple[int, str], list[Histogram]]:
        """The histograms of every point of every picked model, each over record.ranges.<point> (`input` for layer
        0); the same values under the same kind of range are counted once."""
        done: dict[tuple[int, Any], list[Histogram]] = {}
        hists = {}
        for (layer, point), v in points.items():
            setting = self.rc.ranges.input if layer == 0 else getattr(self.rc.ranges, point)
            if setting == "auto":
                setting = point_shape(self.cfgs[0].model, layer, point)
            if (id(v), setting) not in done:
                values = v.detach().cpu()
                ranges = auto_ranges(values, setting) if isinstance(setting, Shape) else setting
                done[(id(v), setting)] = histograms_stacked(values, *ranges, self.rc.bins)
            hists[(layer, point)] = done[(id(v), setting)]
        return hists

    def ics(self, step: int, which: list[int], x: torch.Tensor, y: torch.Tensor, update: torch.Tensor) -> None:
        """Internal covariate shift as Santurkar et al. (2018, sec. 2.2) define it, in every hidden layer i, on the
        step's own batch (x, y): G_i, the gradient of the loss w.r.t. layer i's weight, and G'_i, the same gradient
        after the layers before i have taken this step's `update` (the optimizer's, not applied: optim.peek) while
        layer i and those after it keep their values; ics_l2 = ||G_i - G'_i||, ics_cos their cosine.

        "The layers before i" are the first entries of a theta row, up to where layer i's weight slice begins
        (kernel.layer_weights): both kernels lay a row out in the order of the forward (the input norm, then each
        layer's weight, bias and norm parameters, then the head), so that prefix is every parameter upstream of W_i.
        Gradients are the kernel's `gradient` (batch statistics, as the training step): nothing is changed, and
        theta is restored bit for bit."""
        which = self._todo("ics", step, which)
        if not which:
            return
        kernel = self.kernel
        theta = kernel.theta
        pick = torch.tensor(which, device=theta.device)
        with restored(theta) as (saved,):
            before = kernel.gradient(x, y)[1].index_select(0, pick).double()
            l2, cos = {}, {}
            for i, s in sorted(kernel.layer_weights.items()):
                theta.copy_(saved)
                theta[:, : s.start].sub_(update[:, : s.start])  # as the optimizer's theta.sub_(update)
                after = kernel.gradient(x, y)[1].index_select(0, pick).double()
                g, h = before[:, s], after[:, s]
                l2[i] = torch.linalg.vector_norm(g - h, dim=1)
                cos[i] = (g * h).sum(1) / (torch.linalg.vector_norm(g, dim=1) * torch.linalg.vector_norm(h, dim=1))
        nan = float("nan")
        for i in l2:
            values = zip(l2[i].tolist(), cos[i].tolist(), strict=True)
            for j, (d, c) in zip(which, values, strict=True):
                row = {"ics_l2": d if math.isfinite(d) else nan, "ics_cos": c if math.isfinite(c) else nan}
                self.rows[j]["ics"].append({"step": step, "layer": i, **row})

    def landscape(
        self, step: int, which: list[int], x: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, lr: torch.Tensor
    ) -> None:
        """The loss landscape along the gradient (Santurkar et al. 2018, sec. 3.1) at this step, on its own batch
        (x, y), with batch statistics as the step: from theta, whose loss `loss` (M,) and gradient g = kernel.grad
        the step has just computed, to theta - k * lr * g for each k of record.landscape_scales (lr (M, 1): each
        run's own; with sgd, k = 1 is the very step training takes). One row per point and run: scale k, distance
        ||k lr g||, the loss there and ||g - g'||, g' the gradient there; the start is the row of scale 0.
        report.landscape_summary turns them into the loss range, the gradient change and the effective beta-smoothness.
        Nothing is changed: theta is restored bit for bit."""
        which = self._todo("landscape", step, which)
        if not which:
            return
        kernel = self.kernel
        theta, g = kernel.theta, kernel.grad.clone()
        pick = torch.tensor(which, device=theta.device)
        g_pick = g.index_select(0, pick).double()
        g_norm = torch.linalg.vector_norm(g_pick, dim=1)
        lr_pick = lr.index_select(0, pick).double().flatten()
        points = [(0.0, loss.index_select(0, pick).double(), torch.zeros_like(g_norm))]
        with restored(theta) as (saved,):
            for k in self.rc.landscape_scales:
                theta.copy_(saved)
                theta.sub_(g * (k * lr))  # as the optimizer's theta.sub_(lr * g), k times over
                there, g_there = kernel.gradient(x, y)
                change = torch.linalg.vector_norm(g_there.index_select(0, pick).double() - g_pick, dim=1)
                points.append((k, there.index_select(0, pick).double(), change))
        for k, losses, changes in points:
            distances = (k * lr_pick * g_norm).tolist()
            for j, d, value, c in zip(which, distances, losses.tolist(), changes.tolist(), strict=True):
                row = {"step": step, "scale": k, "distance": d, "loss": value, "grad_change": c}
                self.rows[j]["landscape"].append(row)

    def precise(self, step: int, which: list[int], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The losses of every split in eval mode with recomputed running statistics, two ways (curves' modes):

            precise     precise BN as Wu & Johnson (2021, "Rethinking 'Batch' in BatchNorm", sec. 3) and fvcore's
                        update_bn_stats define it: the network in train mode over `batches` (an epoch of the training
                        split as training batches it), each layer's running mean and variance the equal-weight
                        average of its batch means and (unbiased) batch variances: what the moving averages
                        estimate, without their lag and noise
            population  the statistics a deployed network meets: layer by layer in the order of the forward, the
                        mean and unbiased variance of the layer's input over the whole training split with the
                        network in eval mode, the layers before already on their new statistics (Ioffe & Szegedy
                        2015, algorithm 2, with the population taken whole)

        So eval -> precise is what the moving averages' lag and noise cost, precise -> population what using
        mini-batch statistics in training costs at inference. In train mode noisy BN's noise and dropout's masks
        are on, each batch with those of a step of its own (the steps after `step`), as training draws them. On the
        training split, population-statistics eval mode is train mode by construction (up to n/(n-1) in the
        variance): its loss there is no finding, only the place the other two are measured from. The running
        statistics and step counters are put back after: training and the other records do not see these."""
        which = self._todo("precise", step, which)
        stats = self.kernel.running_stats()
        if not which or not stats:
            return
        counters = self.kernel.step_counters()
        with restored(*counters, *(t for pair in stats.values() for t in pair)) as saved:
            sums = {
                i: [torch.zeros_like(mean, dtype=torch.float64), torch.zeros_like(var, dtype=torch.float64)]
                for i, (mean, var) in stats.items()
            }
            count = 0
            for x, y in batches:
                for counter, start in zip(counters, saved[: len(counters)], strict=True):  # fresh noise, masks
                    counter.copy_(start + count)
                points = self.kernel.probe(x, y, "train").points
                for i in stats:
                    for total, value in zip(sums[i], population_stats(points[(i, "pre_norm")]), strict=True):
                        total += value
                count += 1
            for i, (mean, var) in stats.items():
                mean.copy_(sums[i][0] / count)
                var.copy_(sums[i][1] / count)
            for split in self.splits:
                self._curve_rows(step, which, split, "precise", "eval")
            for i, (mean, var) in sorted(stats.items()):
                pre = self.kernel.probe(*self.splits["train"], "eval").points[(i, "pre_norm")]
                population = population_stats(pre)
                mean.copy_(population[0])
                var.copy_(population[1])
            for split in self.splits:
                self._curve_rows(step, which, split, "population", "eval")

    def tables(self, j: int) -> dict[str, pd.DataFrame]:
        tables = {name: pd.DataFrame(rows) for name, rows in self.rows[j].items() if name != "ics"}
        # ICS beside the other layer statistics; a step with only one of them has NaN for the other.
        if "layers" in tables:
            ics = pd.DataFrame(self.rows[j].get("ics", []), columns=["step", "layer", *ICS])
            layers = tables["layers"].merge(ics.astype({c: "float64" for c in ICS}), on=["step", "layer"], how="outer")
            tables["layers"] = layers.sort_values(["step", "layer"], ignore_index=True)
        return tables
