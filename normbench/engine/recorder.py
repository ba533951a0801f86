"""The recorder of M runs trained together (M = 1 for a run alone): what the driver asks to be measured, taken
through the kernel's interface (base.py) and split into each run's tidy tables.

    rec = Recorder(cfgs, kernel, splits)
    rec.losses(step, [0, 1, ...]); rec.layers(step, [...]); rec.tables(j)   # run j's curves, layers, histograms

The measurements that move parameters or running statistics (ics, landscape, precise) change them inside
`restored` only, so training never sees them. What is computed from the recorded values (histograms, ranges, dead
and saturated units, running statistics' errors) is record.py's, which knows nothing of kernels.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from normbench.engine.base import IMPORTANCE, Kernel, Probe
from normbench.points import GRAD_STATE, POST_ACT, STATE
from normbench.record import (
    ICS,
    RUNNING,
    TIME_PERCENTILES,
    Histogram,
    Shape,
    auto_ranges,
    histograms_stacked,
    point_shape,
    population_stats,
    running_errors,
    time_grad_norms,
    time_percentiles,
    time_unit_metrics,
    unit_metrics_stacked,
)

if TYPE_CHECKING:
    from normbench.config import RunConfig


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
        probe = kernel.probe(*self.splits[rc.eval_split], rc.eval_mode, time=rc.time)
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
        if probe.time:
            self._time_rows(step, which, probe, pick)
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

    def _time_rows(self, step: int, which: list[int], probe: Probe, pick: torch.Tensor) -> None:
        """A sequence model's time table (record.time): for every hidden layer, each point over time at each time step
        t with a real position, its percentiles over the real sequences and channels; post_act's rows also hold the
        saturated and dead shares, state's (h_t) the norm of dL/dh_t (record.py's time_* functions)."""
        mask = probe.mask.index_select(0, pick.to(probe.mask.device))
        activation = "tanh" if self.cfgs[0].model.name == "lstm" else self.cfgs[0].model.activation
        nan = torch.full((len(which), mask.shape[2]), math.nan, dtype=torch.float64)
        rows = []  # (layer, point, n (M, T), percentiles (M, T, Q), saturated, dead, grad_norm (M, T))
        for (layer, point), values in sorted(probe.time.items()):
            if point == GRAD_STATE:
                continue
            values = values.index_select(0, pick.to(values.device))
            q, n = time_percentiles(values, mask)
            sat = dead = grad = nan
            if point == POST_ACT:
                sat, dead = time_unit_metrics(values, mask, activation, self.rc.saturation_threshold)
            if point == STATE:
                grad = time_grad_norms(probe.time[(layer, GRAD_STATE)].index_select(0, pick.to(values.device)), mask)
            rows.append((layer, point, n.tolist(), q.tolist(), sat.tolist(), dead.tolist(), grad.tolist()))
        for pos, j in enumerate(which):
            out = self.rows[j]["time"]
            for layer, point, n, q, sat, dead, grad in rows:
                for t, count in enumerate(n[pos]):
                    if count == 0:
                        continue
                    pct = {f"p{p}": v for p, v in zip(TIME_PERCENTILES, q[pos][t], strict=True)}
                    out.append(
                        {"step": step, "layer": layer, "t": t, "point": point, "n": count, **pct}
                        | {"saturated_fraction": sat[pos][t], "dead_fraction": dead[pos][t], "grad_norm": grad[pos][t]}
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
        views.summary.landscape_summary turns them into the loss range, the gradient change and the effective
        beta-smoothness.
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
