"""What happens inside a network while it trains: losses, histograms, dead and saturated units, gradients.

Points recorded in every recorded layer (models.recorded_layers), on the evaluation set:
    pre_norm   the input of the layer's norm      (fc output Wx+b, or the activation output if placement=after)
    post_norm  the output of the layer's norm     (= pre_norm when norm is none)
    post_act   the output of the activation       (layer 0, the input, has the identity as activation)

Histograms have fixed bins over a configured range and count, beside the bins, the finite values below and
above the range and the NaN and inf values: counts + below + above + nan + inf == n, always. Nothing silently
falls out of a picture (the seed's own histograms dropped every NaN of a diverged net and looked "empty").
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normbench.models import ACTIVATIONS, recorded_layers
from normbench.norms import frozen_running_stats

if TYPE_CHECKING:
    from normbench.config import RunConfig
    from normbench.data import Dataset

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
    """unit_metrics of each of M models at once, from their post-activation values `act` (M, C, N): channels by
    samples, the stacked engine's layout."""
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


@contextmanager
def capture(model: nn.Module):
    """Collect {(layer, point): tensor} from every recorded layer's norm and act during the forwards inside."""
    found: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for i, block in enumerate(recorded_layers(model)):

        def on_norm(module, inputs, output, i=i):
            found[(i, "pre_norm")] = inputs[0]
            found[(i, "post_norm")] = output

        def on_act(module, inputs, output, i=i):
            found[(i, "post_act")] = output

        handles.append(block.norm.register_forward_hook(on_norm))
        handles.append(block.act.register_forward_hook(on_act))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


@contextmanager
def norm_mode(model: nn.Module, mode: str):
    """mode 'train': norms use the statistics of the samples given (running statistics are left untouched);
    mode 'eval': norms use their running statistics. Restores the model's mode after."""
    was_training = model.training
    model.train(mode == "train")
    try:
        if mode == "train":
            with frozen_running_stats(model):
                yield
        else:
            yield
    finally:
        model.train(was_training)


def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Classification (integer targets): mean cross-entropy. Regression: mean over samples of the squared error
    summed over outputs (the seed's reduce_mean(reduce_sum(...)))."""
    if target.dtype == torch.int64:
        return F.cross_entropy(pred, target)
    return (pred - target).square().sum(dim=1).mean()


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred.argmax(1) == target).double().mean()) if target.dtype == torch.int64 else float("nan")


def hist_range(rc: Any, layer: int, point: str) -> tuple[float, float]:
    return rc.ranges.input if layer == 0 else getattr(rc.ranges, point)


IMPORTANCE = tuple(f"sn_{what}_{kind}" for what in ("mean", "var") for kind in ("in", "ln", "bn"))


def _importance(norm: nn.Module) -> dict[str, float]:
    """Switchable norm's importance weights after the softmax (NaN columns for every other norm)."""
    if hasattr(norm, "importance"):
        return {f"sn_{k}": v for k, v in norm.importance().items()}
    return dict.fromkeys(IMPORTANCE, float("nan"))


def point_rows(
    cfg: RunConfig,
    step: int,
    found: dict[tuple[int, str], torch.Tensor],
    norms: dict[int, tuple[float, float]],
    importance: dict[int, dict[str, float]],
    rows: dict[str, list[dict[str, Any]]],
    hists: dict[tuple[int, str], Histogram] | None = None,
    metrics: dict[int, dict[str, float]] | None = None,
) -> None:
    """Append the histograms rows of every captured point and the layers rows of every hidden layer: shared by
    the per-run engine and the stacked one (which passes `hists` and unit `metrics`, computed for all its models
    at once), so both record exactly the same things."""
    rc = cfg.record
    for (layer, point), values in sorted(found.items()):
        h = hists[(layer, point)] if hists is not None else histogram(values, *hist_range(rc, layer, point), rc.bins)
        rows["histograms"].append({"step": step, "layer": layer, "point": point, **h.__dict__})
        if layer > 0 and point == "post_act":
            weight_norm, grad_norm = norms[layer]
            rows["layers"].append(
                {
                    "step": step,
                    "layer": layer,
                    **(
                        metrics[layer]
                        if metrics is not None
                        else unit_metrics(values, cfg.model.activation, rc.saturation_threshold)
                    ),
                    "grad_norm": grad_norm,
                    "weight_norm": weight_norm,
                    **importance[layer],
                }
            )


def _norms(weight: torch.Tensor) -> tuple[float, float]:
    """(weight norm, gradient norm) of a layer's weight; a layer that got no gradient has NaN."""
    grad = weight.grad
    return float(weight.detach().norm()), float(grad.norm()) if grad is not None else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# The recorder of one run


class Recorder:
    """Accumulates a run's tidy tables; see docs/results-format.md for every column."""

    def __init__(self, cfg: RunConfig, model: nn.Module, data: Dataset):
        self.cfg, self.model, self.data = cfg, model, data
        self.splits = ["train"] + (["test"] if data.x_test is not None else [])
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._loss_steps: set[int] = set()
        self._layer_steps: set[int] = set()

    def losses(self, step: int) -> None:
        """Loss on every split, with batch statistics (mode train) and running statistics (mode eval)."""
        if step in self._loss_steps:
            return
        self._loss_steps.add(step)
        with torch.no_grad():
            for split in self.splits:
                x, y = self.data.split(split)
                for mode in ("train", "eval"):
                    with norm_mode(self.model, mode):
                        pred = self.model(x)
                    row = {"step": step, "split": split, "mode": mode}
                    row |= {"loss": float(loss_fn(pred, y)), "accuracy": accuracy(pred, y)}
                    self.rows["curves"].append(row)

    def layers(self, step: int) -> None:
        """Histograms of every point and unit metrics of every hidden layer, from one forward and backward on the
        evaluation set (record.eval_split, record.eval_mode). Parameters and their gradients are left as found."""
        if step in self._layer_steps:
            return
        self._layer_steps.add(step)
        rc = self.cfg.record
        x, y = self.data.split(rc.eval_split)
        saved_grads = {p: p.grad for p in self.model.parameters()}
        self.model.zero_grad(set_to_none=True)
        with norm_mode(self.model, rc.eval_mode), capture(self.model) as found:
            loss_fn(self.model(x), y).backward()
        blocks = recorded_layers(self.model)
        norms = {i: _norms(b.fc.weight) for i, b in enumerate(blocks) if i > 0}
        importance = {i: _importance(b.norm) for i, b in enumerate(blocks) if i > 0}
        point_rows(self.cfg, step, found, norms, importance, self.rows)
        for p, g in saved_grads.items():
            p.grad = g
