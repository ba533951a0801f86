"""What happens inside a network while it trains, measured on plain tensors: histograms, their ranges, dead and
saturated units, how far running statistics are off. The recorder that takes these through a kernel while the
driver trains is engine/recorder.py; nothing here knows of kernels or models' parameters.

Points recorded in every recorded layer (models.recorded_layers), on the evaluation set:
    pre_norm       the input of the layer's norm  (fc output Wx+b, or the activation output if placement=after)
    post_norm      the output of the layer's norm (= pre_norm when norm is none)
    post_act       the output of the activation   (layer 0, the input, has the identity as activation)
and, in every hidden layer (1..depth), the gradients of the probe's loss (a mean over its samples):
    grad_pre_norm  d(loss)/d(pre_norm), every sample and channel: the backpropagated gradient
    grad_weight    d(loss)/d(W), the layer's weight matrix or conv kernel

Optional measurements (record.*, taken by engine/recorder.py): internal covariate shift (`ics_every`, Recorder.ics),
the loss landscape along the gradient (`landscape_every`, Recorder.landscape), how far batch norm's running
statistics are from the training set's (`running_stats`, Recorder.layers) and the losses with recomputed running
statistics, precise BN's and the population's (`precise_bn`, Recorder.precise).

Histograms have equal bins over a range, fixed (record.ranges.<point>: [lo, hi]) or chosen from the histogram's
own values (`auto`: auto_ranges), and count, beside the bins, the finite values below and above the range and the
NaN and inf values: counts + below + above + nan + inf == n, always. Nothing silently falls out of a picture (the
tutorial's own histograms dropped every NaN of a diverged net and looked "empty").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from normbench.points import FORWARD, GRADIENT, TIME_PERCENTILES
from normbench.registry import ACTIVATIONS

if TYPE_CHECKING:
    from normbench.config import ModelConfig

Bounds = float | Sequence[float]

POINTS = FORWARD  # the forward points, in every recorded layer (points.py defines them)
GRAD_POINTS = GRADIENT  # the gradient points, in every hidden layer


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
    if model.placement != "after":  # fc -> norm -> act (and the sequence models: norm, ..., act)
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
# Internal covariate shift and running statistics: the columns, and how far running statistics are off

ICS = ("ics_l2", "ics_cos")  # internal covariate shift per hidden layer (engine/recorder.py), NaN where not measured
RUNNING = ("running_mean_err", "running_var_err")  # running vs training-set statistics (record.running_stats)


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


# ---------------------------------------------------------------------------------------------------------------
# Over time (sequence models, record.time)


def time_percentiles(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The TIME_PERCENTILES of each model's values at each time step over its real sequences and every channel:
    values (M, N, T, C), mask (M, N, T) True at real positions -> (M, T, len(TIME_PERCENTILES)) float64 (linear
    interpolation, numpy.percentile's default; NaN at a step with no real position or with a NaN or inf value
    there) and the real sequences at each step (M, T). One sort of every step's values, padding sorted last."""
    v, mask = values.detach().cpu(), mask.cpu()
    real = mask[..., None].expand_as(v)
    padded = torch.where(real, v, torch.inf).movedim(2, 1).flatten(2)  # (M, T, N * C)
    ordered = torch.from_numpy(np.sort(padded.numpy(), axis=2))  # numpy's sort: several times torch's, on a CPU
    count = mask.sum(1) * v.shape[3]  # (M, T) real values
    qs = torch.tensor(TIME_PERCENTILES, dtype=torch.float64) / 100
    pos = qs * (count[..., None] - 1).clamp(min=0)  # (M, T, Q)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=(count[..., None] - 1).clamp(min=0))
    a, b = (ordered.gather(2, i).to(torch.float64) for i in (lo, hi))
    out = a + (pos - lo) * (b - a)
    broken = (real & ~torch.isfinite(v)).any(3).any(1) | (count == 0)  # (M, T)
    return torch.where(broken[..., None], torch.nan, out), mask.sum(1)


def time_unit_metrics(
    act: torch.Tensor, mask: torch.Tensor, activation: str, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """unit_metrics at each time step, from post-activation values (M, N, T, C) and their mask (M, N, T): the share of
    real values in the saturated region (NaN when the activation has none) and the share of units that are exactly 0
    in every real sequence, each (M, T) float64; NaN at a step with no real position or with a NaN or inf value."""
    a = act.detach().to(torch.float64)
    real = mask[..., None]
    count = (mask.sum(1) * a.shape[3]).to(torch.float64)  # (M, T) real values
    saturated = ACTIVATIONS.get(activation).saturated
    sat = (saturated(a, threshold) & real).sum((1, 3)) / count if saturated else torch.full_like(count, torch.nan)
    dead = ((a == 0) | ~real).all(1).to(torch.float64).mean(2)  # (M, T)
    broken = (real & ~torch.isfinite(a)).any(3).any(1) | (count == 0)
    nan = torch.tensor(torch.nan, dtype=torch.float64, device=a.device)
    return torch.where(broken, nan, sat).cpu(), torch.where(broken, nan, dead).cpu()


def time_grad_norms(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """||dL/dh_t|| at each time step t: each real sequence's norm of the gradient (M, N, T, C) over the channels, then
    their root mean square over the sequences real at t (so that sequences ending before t do not pull it down),
    in float64, (M, T); NaN at a step with no real position."""
    g = torch.where(mask[..., None], grad.detach().to(torch.float64), 0.0)
    return (g.square().sum((1, 3)) / mask.sum(1)).sqrt().cpu()
