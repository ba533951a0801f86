"""The autograd kernel: M ordinary models (models.py) one after the other, their gradients from autograd.

It trains anything the models can be built as: CNNs, every norm (a new norm class trains here with no other
change), every activation. Each model's parameters are views into one row of the (M, P) matrix `theta`, and its
running statistics views into one row of an (M, S) matrix, so that the one optimizer (optim.py) updates every
model with whole-matrix ops and the driver can hold back or restore the statistics of all models at once.

A loop of modules rather than torch.func's vmap over stacked state: docs/benchmarks.md measures both; on this
CPU the loop was the faster (vmap turns a convolution of M models into one grouped convolution, which is slower
here than M plain ones), and it keeps each norm's own forward, running-statistics update included, untouched.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from normbench.engine.base import IMPORTANCE, Probe, accuracies, losses, targets
from normbench.nn.models import recorded_layers
from normbench.points import (
    GRAD_STATE,
    GRADIENT_AT,
    OVER_TIME,
    POST_ACT,
    POST_NORM,
    POST_NORM_H,
    PRE_NORM,
    PRE_NORM_H,
    STATE,
    TIME_ONLY,
)

if TYPE_CHECKING:
    from normbench.config import RunConfig


def _as_rows(tensors: list[list[torch.Tensor]], device) -> tuple[torch.Tensor, list[int]]:
    """Copy each model's tensors into a row of one (M, P) matrix and make them views of it; returns the matrix
    and the offsets of the tensors in a row."""
    sizes = [t.numel() for t in tensors[0]]
    offsets = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    flat = torch.zeros(len(tensors), offsets[-1], device=device, dtype=tensors[0][0].dtype if sizes else None)
    for j, row in enumerate(tensors):
        for k, t in enumerate(row):
            view = flat[j, offsets[k] : offsets[k + 1]].view(t.shape)
            view.copy_(t.detach())
            t.data = view
    return flat, offsets


class AutogradKernel:
    """The kernel interface (base.py) over a list of nn.Modules."""

    name = "autograd"

    def __init__(self, models: list[nn.Module], cfgs: list[RunConfig], classification: bool, device, compile=False):
        if compile:
            raise ValueError("the autograd kernel does not compile; compiling is for the written-out kernel")
        self.models = [m.to(device) for m in models]
        self.classification = classification
        self.params = [list(m.parameters()) for m in self.models]
        check_forward_order([n for n, _ in self.models[0].named_parameters()])
        self.theta, offsets = _as_rows(self.params, device)
        self.grad = torch.zeros_like(self.theta)
        # Running statistics (BN's running_mean/var, switchable's); num_batches_tracked is never read (momentum set).
        self.buffers = [[b for n, b in m.named_buffers() if "running" in n] for m in self.models]
        self.stats, at = _as_rows(self.buffers, device)
        names = [n for n, _ in self.models[0].named_buffers() if "running" in n]
        where = {n: slice(at[k], at[k + 1]) for k, n in enumerate(names)}
        self.stat_columns = {}  # layer i -> the columns of its running mean and variance in the stats matrix
        self.counter_columns = [where[n] for n in names if n.endswith("running_step")]  # noisy BN's, dropout's
        for i in range(len(recorded_layers(self.models[0]))):
            if f"layer{i}.norm.running_mean" in where:
                self.stat_columns[i] = (where[f"layer{i}.norm.running_mean"], where[f"layer{i}.norm.running_var"])
        self.pending = self.stats
        index = {id(p): k for k, p in enumerate(self.params[0])}
        self.layer_weights = {
            i: slice(offsets[index[id(b.fc.weight)]], offsets[index[id(b.fc.weight)] + 1])
            for i, b in enumerate(recorded_layers(self.models[0]))
            if i > 0
        }

    def columns(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, targets(y)

    @contextmanager
    def _mode(self, mode: str):
        """Norms on batch ('train') or running ('eval') statistics; the running statistics as found after."""
        saved = self.stats.clone()
        for m in self.models:
            m.train(mode == "train")
        try:
            yield
        finally:
            self.stats.copy_(saved)

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(M, T, N): every model on its own samples (or all on the same ones)."""
        return torch.stack([m(x[j if len(x) > 1 else 0]) for j, m in enumerate(self.models)]).transpose(1, 2)

    def _grads(self, loss: torch.Tensor, also: list[torch.Tensor] | None = None):
        """d(own loss)/d(own parameters) of every model, as an (M, P) matrix (zero where a parameter is unused), and
        the list of d(loss)/d(t) of each tensor t of `also` (intermediate values of the forward)."""
        flat = [p for ps in self.params for p in ps]
        also = also or []
        grads = torch.autograd.grad(loss.sum(), [*flat, *also], allow_unused=True)
        rows = [
            g.reshape(-1) if g is not None else p.new_zeros(p.numel())
            for g, p in zip(grads[: len(flat)], flat, strict=True)
        ]
        extra = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads[len(flat) :], also, strict=True)]
        return torch.cat(rows).view_as(self.theta), extra

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._mode("train"):
            out = self._outputs(x)
            self.pending = self.stats.clone()  # the norms' own running update, held back until commit
        loss = losses(out, y, self.classification)[0]
        self.grad = self._grads(loss)[0]
        return loss.detach(), accuracies(out.detach(), y, self.classification)

    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._mode("train"):
            out = self._outputs(x)
        loss = losses(out, y, self.classification)[0]
        return loss.detach(), self._grads(loss)[0]

    def running_stats(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        return {i: (self.stats[:, mean], self.stats[:, var]) for i, (mean, var) in self.stat_columns.items()}

    def step_counters(self) -> list[torch.Tensor]:
        return [self.stats[:, col.start] for col in self.counter_columns]

    def commit(self, active: torch.Tensor) -> None:
        self.stats.copy_(torch.where(active[:, None], self.pending, self.stats))

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        with self._mode(mode):
            out = self._outputs(x)
        return losses(out, y, self.classification)[0], accuracies(out, y, self.classification)

    def probe(self, x: torch.Tensor, y: torch.Tensor, mode: str, time: bool = False) -> Probe:
        time = time and getattr(self.models[0], "sequence", False)
        with self._mode(mode), _capture(self.models, time) as found:
            out = self._outputs(x)
        # The gradient at each hidden layer's norm input, the very tensors its forward hook saw (a sum of the
        # models' losses: each model's value depends on its own loss only); over time, at each h_t too.
        pre = [key for key in found if key[0] > 0 and key[1] in GRADIENT_AT]
        also = [v for key in pre for calls in found[key] for v in calls]
        grad, at_pre = self._grads(losses(out, y, self.classification)[0], also)
        it = iter(at_pre)
        for i, point in pre:
            found[(i, GRADIENT_AT[point])] = [[next(it) for _ in calls] for calls in found[(i, point)]]
        over_time = {}
        if time:
            mask = torch.stack([m.last_mask for m in self.models])
            for key, values in found.items():
                if key[0] > 0 and key[1] in (*OVER_TIME, GRAD_STATE):
                    over_time[key] = torch.stack([_steps(calls) for calls in values])
            for key in [k for k in found if k[1] in TIME_ONLY]:
                del found[key]
        stacked: dict[tuple[int, ...], torch.Tensor] = {}  # one tensor for points that are the same values
        for values in found.values():
            ids = tuple(id(v) for calls in values for v in calls)
            if ids not in stacked:
                stacked[ids] = torch.stack([_rows(calls, m) for calls, m in zip(values, self.models, strict=True)])
        points = {key: stacked[tuple(id(v) for calls in values for v in calls)] for key, values in found.items()}
        return Probe(points, grad, _importance(self.models), over_time, mask if time else None)


def _steps(calls: list[torch.Tensor]) -> torch.Tensor:
    """A point's values in one model's sequence forward as (N, T, C): one call over the whole sequence, or one
    (N, C) per step of a recurrence."""
    v = calls[0] if len(calls) == 1 and calls[0].dim() == 3 else torch.stack(calls, 1)
    return v.detach()


def _rows(calls: list[torch.Tensor], model: nn.Module) -> torch.Tensor:
    """A point's values in one model's forward as (C, K), channels by values. A sequence model's (N, T, C), or
    (N, C) once per step of a recurrence, keeps the real positions of its last forward's mask only."""
    if not getattr(model, "sequence", False):
        (v,) = calls
        return v.detach().movedim(1, 0).reshape(v.shape[1], -1)
    return _steps(calls)[model.last_mask].T


def check_forward_order(names: list[str]) -> None:
    """A row of theta lists a model's parameters in registration order; internal covariate shift (Recorder.ics) takes
    "the layers before layer i" to be the row up to layer i's weight, which holds when the blocks are registered in
    the order of the forward (layer0, layer1, ..., head), as models.py builds them. Refuse a model that is not."""
    rank = [int(m[1]) if (m := re.match(r"layer(\d+)\.", n)) else math.inf for n in names]  # the head: last
    if rank != sorted(rank):
        out_of_order = next(n for n, a, b in zip(names[1:], rank, rank[1:], strict=False) if b < a)
        raise ValueError(
            f"the model registers its parameters out of forward order ({out_of_order} after a later block): the "
            "rows of theta would not list upstream parameters first; register layer0, layer1, ..., head in order"
        )


@contextmanager
def _capture(models: list[nn.Module], time: bool = False):
    """{(layer, point): for each model, in their order, the values of each call (N, C, ...)} from every recorded
    layer's norm and activation during the forwards inside. A module called once per step of a recurrence gives
    one (N, C) per step. `time`: also a sequence layer's hidden-to-hidden norm (pre_norm_h, post_norm_h) and its
    state h_t (state)."""
    found: dict[tuple[int, str], list[list[torch.Tensor]]] = {}
    handles = []

    def keep(key, j, value):
        calls = found.setdefault(key, [[] for _ in models])
        calls[j].append(value)

    def norm_hook(i, j, before=PRE_NORM, after=POST_NORM):
        def on_norm(module, inputs, output):
            keep((i, before), j, inputs[0])
            keep((i, after), j, output)

        return on_norm

    for j, m in enumerate(models):
        for i, block in enumerate(recorded_layers(m)):
            handles.append(block.norm.register_forward_hook(norm_hook(i, j)))
            handles.append(block.act.register_forward_hook(lambda mod, inp, out, i=i, j=j: keep((i, POST_ACT), j, out)))
            if time and hasattr(block, "state"):
                if hasattr(block, "norm_h"):
                    handles.append(block.norm_h.register_forward_hook(norm_hook(i, j, PRE_NORM_H, POST_NORM_H)))
                handles.append(
                    block.state.register_forward_hook(lambda mod, inp, out, i=i, j=j: keep((i, STATE), j, out))
                )
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def _importance(models: list[nn.Module]) -> dict[int, torch.Tensor]:
    """Switchable norm's importance weights after the softmax, per hidden layer (M, 6); NaN for other norms."""
    out = {}
    for i in range(1, len(recorded_layers(models[0]))):
        rows = []
        for m in models:
            norm = recorded_layers(m)[i].norm
            weights = norm.importance() if hasattr(norm, "importance") else {}
            rows.append([weights.get(k.removeprefix("sn_"), float("nan")) for k in IMPORTANCE])
        out[i] = torch.tensor(rows, dtype=torch.float64)
    return out
