"""What happens inside a network while it trains: losses, histograms, dead and saturated units, gradients.

    rec = Recorder(cfgs, kernel, splits)     # M runs trained together by one kernel (engine/)
    rec.losses(step, [0, 1, ...]); rec.layers(step, [...]); rec.tables(j)   # run j's curves, layers, histograms

Points recorded in every recorded layer (models.recorded_layers), on the evaluation set:
    pre_norm   the input of the layer's norm      (fc output Wx+b, or the activation output if placement=after)
    post_norm  the output of the layer's norm     (= pre_norm when norm is none)
    post_act   the output of the activation       (layer 0, the input, has the identity as activation)

Histograms have fixed bins over a configured range and count, beside the bins, the finite values below and
above the range and the NaN and inf values: counts + below + above + nan + inf == n, always. Nothing silently
falls out of a picture (the tutorial's own histograms dropped every NaN of a diverged net and looked "empty").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch

from normbench.registry import ACTIVATIONS

if TYPE_CHECKING:
    from normbench.config import RunConfig

POINTS = ("pre_norm", "post_norm", "post_act")


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


def histograms_stacked(values: torch.Tensor, lo: float, hi: float, bins: int) -> list[Histogram]:
    """histogram() of each values[m] (M, ...) at once (torch.histc has neither a batch dimension nor a vmap rule):
    each value's bin by arithmetic in float64, then one bincount over (model, slot) counts them all. Each pass
    over the values is chosen for speed on the CPU (torch.bucketize, aminmax and var were 3-25x slower here)."""
    flat = values.detach().reshape(values.shape[0], -1).cpu()  # counted on the CPU, whatever the device
    v = flat.to(torch.float64)  # (M, K); exact for float32 values
    m, k = v.shape
    total = v.sum(1)
    all_finite = bool(torch.isfinite(total).all())  # a float64 sum of float32 values overflows only on inf or NaN
    if all_finite:
        nan = n_inf = torch.zeros(m, dtype=torch.int64)
        n_fin = torch.full((m,), k)
    else:  # NaN and inf are counted apart, moved below the range, then taken out of `below`
        finite = torch.isfinite(v)
        nan = torch.isnan(v).sum(1)
        n_fin = finite.sum(1)
        n_inf = k - n_fin - nan
        v = torch.where(finite, v, lo - 1.0)
        total = v.sum(1) - (k - n_fin) * (lo - 1.0)
    # Slot 0: below lo; 1..bins: the bins, the last one closed (hi belongs to it); bins + 1: above hi. v < lo
    # exactly when (v - lo) * scale < 0, so `below` is exact; `above` is decided by comparing with hi itself.
    slot = (v - lo).mul_(bins / (hi - lo)).floor_().clamp_(-1, bins - 1).add_(1)
    slot.masked_fill_(v > hi, bins + 1)
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
        Histogram(counts[j], lo, hi, below[j], above[j], nan[j], n_inf[j], k, mean[j], std[j], vmin[j], vmax[j])
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


def hist_range(rc: Any, layer: int, point: str) -> tuple[float, float]:
    return rc.ranges.input if layer == 0 else getattr(rc.ranges, point)


# ---------------------------------------------------------------------------------------------------------------
# The recorder of M runs trained together (M = 1 for a run alone)

# Switchable norm's importance weights, recorded per layer (NaN for every other norm).
IMPORTANCE = tuple(f"sn_{what}_{kind}" for what in ("mean", "var") for kind in ("in", "ln", "bn"))


@dataclass
class Probe:
    """What a kernel's recording pass sees, for all M models at once."""

    points: dict[tuple[int, str], torch.Tensor]  # (layer, point) -> (M, C, K): channels by values
    grad: torch.Tensor  # (M, P) gradient of each model's loss on the probe's samples
    importance: dict[int, torch.Tensor]  # hidden layer -> (M, len(IMPORTANCE)), NaN without switchable norm


class Measured(Protocol):
    """What the recorder needs of a kernel (engine/base.py has the whole interface)."""

    theta: torch.Tensor
    layer_weights: dict[int, slice]

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]: ...

    def probe(self, x: torch.Tensor, y: torch.Tensor, mode: str) -> Probe: ...


class Recorder:
    """Accumulates the tidy tables of each of M runs (docs/results-format.md has every column). Every
    measurement is taken for all models at once through the kernel, then split into each run's rows; a step is
    recorded at most once per run."""

    def __init__(self, cfgs: list[RunConfig], kernel: Measured, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]):
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
        for split, (x, y) in self.splits.items():
            for mode in ("train", "eval"):
                known = train_loss is not None and (split, mode) == ("train", "train")
                loss, acc = train_loss if known else self.kernel.evaluate(x, y, mode)
                loss, acc = loss.tolist(), acc.tolist()
                for j in which:
                    row = {"step": step, "split": split, "mode": mode, "loss": loss[j], "accuracy": acc[j]}
                    self.rows[j]["curves"].append(row)

    def layers(self, step: int, which: list[int]) -> None:
        """Histograms of every point and the unit statistics of every hidden layer, from one forward and backward
        on the evaluation set (record.eval_split, record.eval_mode)."""
        which = self._todo("layers", step, which)
        if not which:
            return
        rc, kernel = self.rc, self.kernel
        probe = kernel.probe(*self.splits[rc.eval_split], rc.eval_mode)
        pick = torch.tensor(which, device=kernel.theta.device)
        points = {key: v.index_select(0, pick) for key, v in probe.points.items()}
        hists = {key: histograms_stacked(v, *hist_range(rc, *key), rc.bins) for key, v in points.items()}
        activation = self.cfgs[0].model.activation
        metrics = {
            i: unit_metrics_stacked(points[(i, "post_act")], activation, rc.saturation_threshold)
            for i in kernel.layer_weights
        }
        slices = kernel.layer_weights.items()
        weight = {i: torch.linalg.vector_norm(kernel.theta[pick, s], dim=1).tolist() for i, s in slices}
        grad = {i: torch.linalg.vector_norm(probe.grad[pick, s], dim=1).tolist() for i, s in slices}
        importance = {i: v[pick.cpu()].tolist() for i, v in probe.importance.items()}
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
                        "weight_norm": weight[i][pos],
                        **dict(zip(IMPORTANCE, importance[i][pos], strict=True)),
                    }
                )

    def tables(self, j: int) -> dict[str, pd.DataFrame]:
        return {name: pd.DataFrame(rows) for name, rows in self.rows[j].items()}
