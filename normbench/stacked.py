"""The stacked engine: many MLP runs of one structure trained as one computation, its backward written out.

    groups = stack_groups(runs)                     # runs that share a structure, in stacks
    results = train_stacked(group_configs)          # one RunResult per config, as train_run would give
    results = train_stacked(cfgs, compile=True)     # the training step through torch.compile (fused loops)

Runs stack when they share the model shape, norm, activation, optimizer kind, batch size, data and recording;
seeds (initialization and batch order), learning rates, init scales and bias inits may differ inside a stack.

Layout. Model j's parameters are row j of one (M, P) matrix, `theta`; its views give a layer's weight as
(M, out, in), like nn.Linear's. Activations are (M, C, N): channels by samples, samples last. A layer of every
model is then one batched matmul W @ h, batch norm reduces over the contiguous last axis, and the optimizer is a
few ops over the whole matrix. (A first version kept activations (M, N, C) and ran PyTorch's batch norm over M*C
channels through autograd; it spent most of its time copying transposed tensors: docs/benchmarks.md.)

Why the backward is written out: autograd records and replays some twenty small ops per layer, and at these
sizes the cost per op dominates; a pure function from (parameters, data) to (losses, gradients) is also what
torch.compile fuses best. Every derivative is checked against autograd of the reference model in float64
(tests/test_stacked.py).

Each model is initialized by the reference code (same seed, same draws) and copied in, so a stacked run
reproduces its per-run twin up to float32 rounding. Each model's loss and gradient are its own (nothing is
averaged across the stack). A model whose loss turns non-finite is recorded as diverged and frozen.

Supported: model mlp (regression or classification), norms none, batch, batch_manual, layer, rms and group,
every activation, placement before or after, optimizers sgd, momentum, nesterov, adam. Anything else (CNNs,
instance and switchable norm) uses the per-run engine (`stackable`).
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from normbench.config import Run, RunConfig
from normbench.data import batches, build_dataset
from normbench.models import ACTIVATIONS, Activation, build_model
from normbench.record import IMPORTANCE, hist_range, histograms_stacked, point_rows, unit_metrics_stacked
from normbench.train import RunResult, single_thread, total_steps

# batch_manual trains as batch (the same function, its backward written by hand in norms.py).
STACKABLE_NORMS = ("none", "batch", "batch_manual", "layer", "rms", "group")
STACKABLE_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")

Tensors = dict[str, torch.Tensor]
Shapes = tuple[tuple[str, tuple[int, ...]], ...]


def stackable(cfg: RunConfig) -> bool:
    return cfg.model.name == "mlp" and cfg.model.norm in STACKABLE_NORMS and cfg.train.optimizer in STACKABLE_OPTIMIZERS


def structure_key(cfg: RunConfig) -> str:
    """Everything but what may vary inside a stack: seed, lr, init scale and bias init."""
    d = cfg.model_dump(mode="json")
    d.pop("seed")
    d["train"].pop("lr")
    d["model"]["weight_init"].pop("std")
    d["model"].pop("bias_init")
    return repr(sorted(d.items()))


def stack_groups(runs: list[Run], max_models: int = 16) -> list[list[Run]]:
    """Runs grouped by structure, in stacks of at most `max_models`. Larger stacks of the seed's MLP were slower
    per model on this 2-core CPU: their (M, 30, 500) activations fall out of the 1 MB cache of a core."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[structure_key(run.config)].append(run)
    return [g[i : i + max_models] for g in groups.values() for i in range(0, len(g), max_models)]


# ---------------------------------------------------------------------------------------------------------------
# The structure of a stack, and its parameters as one matrix


@dataclass(frozen=True)
class Spec:
    """What every model of a stack shares, read from one reference model."""

    depth: int
    act: Activation
    act_fn: nn.Module = field(compare=False)  # a fresh module per spec: two specs of one structure are equal
    norm: str  # 'batch' (over the samples, running statistics) or 'layer', 'rms', 'group' (over the channels)
    norm_layers: tuple[int, ...]  # the layers with a norm; 0 is the input
    groups: tuple[int, ...]  # group norm's group count in each layer (1 elsewhere)
    affine: bool
    norm_first: bool  # placement 'before': fc -> norm -> act
    eps: float
    momentum: float
    classification: bool
    shapes: Shapes  # one model's parameters, in the order of a row of theta
    stat_shapes: Shapes  # its running statistics (mean{i}, var{i}), in the order of a row of the stats matrix

    def views(self, flat: torch.Tensor, shapes: Shapes | None = None) -> Tensors:
        """Named views into an (M, P) matrix of parameters or gradients (or of statistics): no copies."""
        out, at = {}, 0
        for name, shape in self.shapes if shapes is None else shapes:
            size = _numel(shape)
            out[name] = flat[:, at : at + size].view(flat.shape[0], *shape)
            at += size
        return out

    def flatten(self, tensors: Tensors, shapes: Shapes | None = None) -> torch.Tensor:
        """The inverse of views: the (M, P) matrix from named (M, ...) tensors."""
        m = max(t.shape[0] for t in tensors.values())
        order = self.shapes if shapes is None else shapes
        return torch.cat([tensors[name].expand(m, *shape).reshape(m, -1) for name, shape in order], dim=1)


def _numel(shape: tuple[int, ...]) -> int:
    size = 1
    for s in shape:
        size *= s
    return size


def reference_tensors(model: nn.Module) -> tuple[Tensors, Tensors]:
    """A reference MLP's parameters in the stacked names and shapes (biases and norm scales as (C, 1) columns),
    and its norms' running statistics."""
    params: Tensors = {}
    stats: Tensors = {}
    for i in range(model.depth + 1):
        block = getattr(model, f"layer{i}")
        if i > 0:
            params[f"w{i}"] = block.fc.weight
            if block.fc.bias is not None:
                params[f"b{i}"] = block.fc.bias[:, None]
        if getattr(block.norm, "running_mean", None) is not None:
            stats[f"mean{i}"], stats[f"var{i}"] = block.norm.running_mean[:, None], block.norm.running_var[:, None]
        if getattr(block.norm, "weight", None) is not None:
            params[f"gamma{i}"], params[f"beta{i}"] = block.norm.weight[:, None], block.norm.bias[:, None]
    params["w_head"], params["b_head"] = model.head.weight, model.head.bias[:, None]
    return params, stats


def _norm_of(model: nn.Module, i: int) -> nn.Module:
    return getattr(model, f"layer{i}").norm


def make_spec(model: nn.Module, cfg: RunConfig, classification: bool) -> Spec:
    params, stats = reference_tensors(model)
    mc = cfg.model
    return Spec(
        depth=model.depth,
        act=ACTIVATIONS.get(mc.activation),
        act_fn=ACTIVATIONS.get(mc.activation).make(),
        norm="batch" if mc.norm == "batch_manual" else mc.norm,
        norm_layers=tuple(i for i in range(model.depth + 1) if not isinstance(_norm_of(model, i), nn.Identity)),
        groups=tuple(getattr(_norm_of(model, i), "groups", 1) for i in range(model.depth + 1)),
        affine=mc.norm_affine,
        norm_first=mc.placement == "before",
        eps=mc.norm_eps,
        momentum=mc.norm_momentum,
        classification=classification,
        shapes=tuple((name, tuple(t.shape)) for name, t in params.items()),
        stat_shapes=tuple((name, tuple(t.shape)) for name, t in stats.items()),
    )


# ---------------------------------------------------------------------------------------------------------------
# Forward and backward of M models at once. x is (1 or M, F, N); every activation (M, C, N).


def _grouped(spec: Spec, i: int, t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """t (M, C, N) viewed so that the norm's statistics are over `dims`: the samples for batch norm, the channels
    for layer and rms norm, the channels of each group for group norm (M, G, C/G, N)."""
    if spec.norm == "batch":
        return t, (2,)
    if spec.norm == "group":
        return t.reshape(t.shape[0], spec.groups[i], -1, t.shape[-1]), (2,)
    return t, (1,)


def _norm_forward(spec: Spec, p: Tensors, i: int, z: torch.Tensor, mode: str, stats: Tensors | None):
    """The norm of layer i. Returns the output, what the backward needs, and for batch norm in mode 'train' the
    batch's (mean, biased variance)."""
    if i not in spec.norm_layers:
        return z, None, None
    batch = None
    if spec.norm == "batch" and mode == "eval":  # the running statistics
        rstd = torch.rsqrt(stats[f"var{i}"] + spec.eps)
        xhat = (z - stats[f"mean{i}"]) * rstd
    else:
        zz, dims = _grouped(spec, i, z)
        if spec.norm == "rms":  # no centring: divide by the root mean square
            d, var = zz, (zz * zz).mean(dims, keepdim=True)
        else:
            mean = zz.mean(dims, keepdim=True)
            d = zz - mean
            var = (d * d).mean(dims, keepdim=True)
            batch = (mean, var) if spec.norm == "batch" else None
        rstd = torch.rsqrt(var + spec.eps)
        xhat = (d * rstd).reshape(z.shape)
    u = xhat * p[f"gamma{i}"] + p[f"beta{i}"] if spec.affine else xhat
    return u, (xhat, rstd), batch


def _norm_backward(spec: Spec, p: Tensors, i: int, du: torch.Tensor, saved, mode: str, grads: Tensors):
    """d(loss)/d(norm input) from d(loss)/d(norm output); the scale and shift gradients go into `grads`."""
    if i not in spec.norm_layers:
        return du
    xhat, rstd = saved
    du_xhat = (du * xhat).sum(2, keepdim=True)
    du_sum = du.sum(2, keepdim=True)
    if spec.affine:
        grads[f"gamma{i}"], grads[f"beta{i}"] = du_xhat, du_sum
    if spec.norm == "batch":  # gamma is constant along the samples: the sums above serve the backward too
        k = p[f"gamma{i}"] * rstd if spec.affine else rstd
        if mode == "eval":  # running statistics: an affine map per channel
            return du * k
        n = du.shape[2]
        # The batch statistics depend on every sample: dz = gamma * rstd * (du - mean(du) - xhat * mean(du * xhat)).
        return (du - du_sum / n - xhat * (du_xhat / n)) * k
    # Statistics over the channels: g = d(loss)/d(xhat) varies along them.
    g, dims = _grouped(spec, i, du * p[f"gamma{i}"] if spec.affine else du)
    x, _ = _grouped(spec, i, xhat)
    g_x = (g * x).mean(dims, keepdim=True)
    centred = g - g.mean(dims, keepdim=True) if spec.norm != "rms" else g
    return ((centred - x * g_x) * rstd).reshape(du.shape)


def forward(spec: Spec, p: Tensors, x: torch.Tensor, mode: str, stats: Tensors | None = None, found=None):
    """Outputs (M, T, N), the tape for `backward`, and each norm layer's batch statistics (mode 'train').
    `found`, if given, collects every recorded point {(layer, point): (M, C, N)}."""
    tape, batch = [], {}
    u, saved, batch[0] = _norm_forward(spec, p, 0, x, mode, stats)
    tape.append((None, saved, None, None))
    if found is not None:
        m = p["w_head"].shape[0]
        found.update({(0, "pre_norm"): x.expand(m, -1, -1), (0, "post_norm"): u.expand(m, -1, -1)})
        found[(0, "post_act")] = found[(0, "post_norm")]
    h = u
    for i in range(1, spec.depth + 1):
        z = torch.matmul(p[f"w{i}"], h)
        if f"b{i}" in p:
            z = z + p[f"b{i}"]
        if spec.norm_first:
            u, saved, batch[i] = _norm_forward(spec, p, i, z, mode, stats)
            a = spec.act_fn(u)
            tape.append((h, saved, u, a))
            pre, h = z, a
        else:
            a = spec.act_fn(z)
            u, saved, batch[i] = _norm_forward(spec, p, i, a, mode, stats)
            tape.append((h, saved, z, a))
            pre, h = a, u
        if found is not None:
            found.update({(i, "pre_norm"): pre, (i, "post_norm"): u, (i, "post_act"): a})
    tape.append((h, None, None, None))
    out = torch.matmul(p["w_head"], h) + p["b_head"]
    return out, tape, {i: b for i, b in batch.items() if b is not None}


def backward(spec: Spec, p: Tensors, tape: list, dout: torch.Tensor, mode: str) -> Tensors:
    """Gradients of every model's own loss w.r.t. its parameters, from dout = d(loss)/d(outputs)."""
    grads: Tensors = {}
    h = tape[-1][0]
    grads["w_head"] = torch.matmul(dout, h.transpose(1, 2))
    grads["b_head"] = dout.sum(2, keepdim=True)
    dh = torch.matmul(p["w_head"].transpose(1, 2), dout)
    for i in range(spec.depth, 0, -1):
        h_in, saved, act_in, a = tape[i]
        if spec.norm_first:  # dh is d(loss)/d(act output)
            dz = _norm_backward(spec, p, i, spec.act.grad(dh, act_in, a), saved, mode, grads)
        else:  # dh is d(loss)/d(norm output)
            dz = spec.act.grad(_norm_backward(spec, p, i, dh, saved, mode, grads), act_in, a)
        grads[f"w{i}"] = torch.matmul(dz, h_in.transpose(1, 2))
        if f"b{i}" in p:
            grads[f"b{i}"] = dz.sum(2, keepdim=True)
        if i > 1 or "gamma0" in p:
            dh = torch.matmul(p[f"w{i}"].transpose(1, 2), dz)
    if "gamma0" in p:
        _norm_backward(spec, p, 0, dh, tape[0][1], mode, grads)
    return grads


def losses(spec: Spec, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's loss (M,) as the reference loss_fn computes it, and d(loss)/d(out).
    Regression: y (1 or M, T, N), loss = mean over samples of the squared error summed over outputs.
    Classification: y (1 or M, N) class indices, loss = mean cross-entropy."""
    n = out.shape[2]
    if spec.classification:
        logp = out.log_softmax(1)
        target = y.expand(out.shape[0], -1)[:, None, :]
        loss = -logp.gather(1, target).mean((1, 2))
        dout = logp.exp().scatter_add(1, target, torch.full_like(target, -1, dtype=out.dtype)) / n
        return loss, dout
    diff = out - y
    return diff.square().sum(1).mean(1), diff * (2 / n)


def accuracies(spec: Spec, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not spec.classification:
        return torch.full((out.shape[0],), float("nan"), dtype=torch.float64)
    return (out.argmax(1) == y).double().mean(1).cpu()


def train_grads(spec: Spec, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """One training step's pure part: losses (M,), accuracies (M,), the gradient (M, P), and the batch statistics
    in the layout of the running ones (M, S), the variance unbiased as PyTorch's running update takes it."""
    p = spec.views(theta)
    out, tape, batch = forward(spec, p, x, "train")
    loss, dout = losses(spec, out, y)
    correct = (out.argmax(1) == y).float().mean(1) if spec.classification else loss * float("nan")
    n = x.shape[2]
    stats = {}
    for i, (mean, var) in batch.items():
        stats[f"mean{i}"], stats[f"var{i}"] = mean, var * (n / max(n - 1, 1))
    batch_stats = spec.flatten(stats, spec.stat_shapes) if stats else theta[:, :0]
    return loss, correct, spec.flatten(backward(spec, p, tape, dout, "train")), batch_stats


_compiled: dict[Spec, Callable] = {}


def compiled_step(spec: Spec) -> Callable:
    """train_grads for `spec` through torch.compile, one per structure in a process: a stack of the same structure
    reuses it (and its compiled graphs, one per batch shape) instead of tracing and compiling again."""
    if spec not in _compiled:
        _compiled[spec] = torch.compile(lambda theta, x, y: train_grads(spec, theta, x, y), dynamic=False)
    return _compiled[spec]


# ---------------------------------------------------------------------------------------------------------------
# The optimizers, over the whole (M, P) matrix with a learning rate per model


class FlatOptimizer:
    """SGD / momentum / nesterov / Adam as torch.optim writes them, one op per update term for every parameter of
    every model; a model that is not active (diverged) keeps its parameters."""

    def __init__(self, cfgs: list[RunConfig], device: torch.device):
        t = cfgs[0].train
        self.kind, self.mu, self.wd, self.betas = t.optimizer, t.momentum, t.weight_decay, t.betas
        self.lr = torch.tensor([c.train.effective_lr() for c in cfgs], device=device).view(-1, 1)
        self.state: Tensors = {}
        self.t = 0

    @torch.no_grad()
    def step(self, theta: torch.Tensor, grad: torch.Tensor, active: torch.Tensor) -> None:
        self.t += 1
        g = grad.add(theta, alpha=self.wd) if self.wd else grad
        s = self.state
        if self.kind == "sgd":
            update = self.lr * g
        elif self.kind in ("momentum", "nesterov"):
            buf = s["buf"] = g.clone() if "buf" not in s else s["buf"].mul_(self.mu).add_(g)
            update = self.lr * (g.add(buf, alpha=self.mu) if self.kind == "nesterov" else buf)
        else:  # adam
            b1, b2 = self.betas
            m = s.setdefault("m", torch.zeros_like(theta)).lerp_(g, 1 - b1)
            v = s.setdefault("v", torch.zeros_like(theta)).mul_(b2).addcmul_(g, g, value=1 - b2)
            bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
            update = (self.lr / bc1) * m / (v.sqrt() / bc2**0.5 + 1e-8)
        theta.sub_(update.masked_fill_(~active[:, None], 0.0))  # a diverged model's NaN update is kept out


# ---------------------------------------------------------------------------------------------------------------
# Training a stack, recording as the reference does


def train_stacked(
    cfgs: list[RunConfig],
    on_step: Callable[[int], None] | None = None,
    *,
    compile: bool = False,
    device: str | torch.device = "cpu",
) -> list[RunResult]:
    with single_thread():
        return StackedTraining(cfgs, torch.device(device), compile).run(on_step)


class StackedTraining:
    def __init__(self, cfgs: list[RunConfig], device: torch.device, compile: bool):
        self.t0 = time.perf_counter()
        self.cfgs, self.device, cfg = cfgs, device, cfgs[0]
        self.data = data = build_dataset(cfg.data)
        models = []
        for c in cfgs:  # the reference initialization, model by model
            torch.manual_seed(c.seed)
            models.append(build_model(c.model, data.input_shape, data.out_features))
        self.spec = spec = make_spec(models[0], cfg, data.task == "classification")
        tensors = [reference_tensors(m) for m in models]
        self.theta = torch.stack([spec.flatten({k: v[None] for k, v in p.items()})[0] for p, _ in tensors])
        self.theta = self.theta.detach().to(device)
        self.stats_flat = self.theta[:, :0]  # (M, 0) without batch norm
        if spec.stat_shapes:
            stats = [spec.flatten({k: v[None] for k, v in s.items()}, spec.stat_shapes)[0] for _, s in tensors]
            self.stats_flat = torch.stack(stats).detach().to(device)
        self.stats = spec.views(self.stats_flat, spec.stat_shapes)
        self.opt = FlatOptimizer(cfgs, device)
        self.step_fn = compiled_step(spec) if compile else functools.partial(train_grads, spec)
        self.m = len(cfgs)
        self.rows: list[dict[str, list[dict[str, Any]]]] = [defaultdict(list) for _ in cfgs]
        bs = cfg.train.batch_size
        self.full_batch = (bs == "full" or bs >= len(data.x_train)) and not cfg.data.shuffle  # as data.batches
        names = ["train"] + (["test"] if data.x_test is not None else [])
        self.splits = {name: self._columns(*data.split(name)) for name in names}

    def _columns(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples as the last axis: x (N, ...) -> (1, F, N); y (N, T) -> (1, T, N), or (N,) -> (1, N)."""
        x = x.reshape(len(x), -1).T[None].contiguous()
        y = y.T[None].contiguous() if y.dim() == 2 else y[None]
        return x.to(self.device), y.to(self.device)

    def _batches(self):
        """(x, y) of every step, each model's samples in the order the reference's data.batches gives that run."""
        if self.full_batch:  # the seed's setting: the same data every step, no indexing
            while True:
                yield self.splits["train"]
        cfg, data = self.cfgs[0], self.data
        n = len(data.x_train)
        x, y = data.x_train.reshape(n, -1).to(self.device), data.y_train.to(self.device)
        every = torch.arange(n)
        size = None if cfg.train.batch_size == "full" else cfg.train.batch_size
        orders = [
            batches(every, every, size, cfg.data.shuffle, torch.Generator().manual_seed(c.seed)) for c in self.cfgs
        ]
        while True:
            idx = torch.stack([next(o)[0] for o in orders]).to(self.device)  # (M, B)
            yb = y[idx]
            yield x[idx].transpose(1, 2).contiguous(), yb.transpose(1, 2).contiguous() if yb.dim() == 3 else yb

    def run(self, on_step: Callable[[int], None] | None) -> list[RunResult]:
        cfg, rc = self.cfgs[0], self.cfgs[0].record
        steps = total_steps(cfg, self.data)
        active = torch.ones(self.m, dtype=torch.bool, device=self.device)
        diverged: list[int | None] = [None] * self.m
        stream = self._batches()
        step = 0
        for step in range(steps + 1):
            at_loss = step % rc.loss_every == 0 or step == steps
            at_layers = step % rc.hist_every == 0 or step == steps
            if step == steps:
                self.record_losses(step, active)
                self.record_layers(step, active)
                break
            xb, yb = next(stream)
            loss, correct, grad, batch = self.step_fn(self.theta, xb, yb)  # pure: nothing has changed yet
            # The train split's loss in train mode at this step is this very loss when the batch is the data.
            if at_loss:
                self.record_losses(step, active, (loss, correct) if self.full_batch else None)
            if at_layers:
                self.record_layers(step, active)
            # PyTorch's running update: running = (1 - momentum) * running + momentum * batch.
            self.stats_flat.lerp_(batch, self.spec.momentum)
            bad = active & ~torch.isfinite(loss)
            if bad.any():  # these models diverge at this step: recorded as the reference does, then frozen
                for j in bad.nonzero().flatten().tolist():
                    diverged[j] = step
                if not at_loss:
                    self.record_losses(step, bad)
                if not at_layers:
                    self.record_layers(step, bad)
                active &= ~bad
                if not active.any():
                    break
            self.opt.step(self.theta, grad, active)
            if on_step is not None:
                on_step(step + 1)

        wall = (time.perf_counter() - self.t0) / self.m
        results = []
        for j in range(self.m):
            tables = {name: pd.DataFrame(r) for name, r in self.rows[j].items()}
            status, done = ("diverged", diverged[j]) if diverged[j] is not None else ("ok", step)
            results.append(RunResult(status, diverged[j], done, wall, tables))
        return results

    def record_losses(self, step: int, which: torch.Tensor, train_loss=None) -> None:
        p = self.spec.views(self.theta)
        chosen = which.nonzero().flatten().tolist()
        with torch.no_grad():
            for split, (x, y) in self.splits.items():
                for mode in ("train", "eval"):
                    if train_loss is not None and (split, mode) == ("train", "train"):
                        loss, acc = train_loss
                        acc = acc.double().cpu()
                    else:
                        out = forward(self.spec, p, x, mode, self.stats)[0]
                        loss, acc = losses(self.spec, out, y)[0], accuracies(self.spec, out, y)
                    loss = loss.tolist()
                    for j in chosen:
                        self.rows[j]["curves"].append(
                            {"step": step, "split": split, "mode": mode, "loss": loss[j], "accuracy": float(acc[j])}
                        )

    def record_layers(self, step: int, which: torch.Tensor) -> None:
        """Histograms of every point (all models at once) and the layers rows, from one forward and backward on
        the evaluation set, as the reference Recorder.layers."""
        chosen = which.nonzero().flatten().tolist()
        if not chosen:
            return
        rc = self.cfgs[0].record
        x, y = self.splits[rc.eval_split]
        p = self.spec.views(self.theta)
        found: dict[tuple[int, str], torch.Tensor] = {}
        with torch.no_grad():
            out, tape, _ = forward(self.spec, p, x, rc.eval_mode, self.stats, found)
            grads = backward(self.spec, p, tape, losses(self.spec, out, y)[1], rc.eval_mode)
        if len(chosen) < self.m:
            idx = torch.tensor(chosen, device=self.device)
            found = {key: v.index_select(0, idx) for key, v in found.items()}
        hists = {key: histograms_stacked(v, *hist_range(rc, *key), rc.bins) for key, v in found.items()}
        activation, threshold = self.cfgs[0].model.activation, rc.saturation_threshold
        metrics = {
            i: unit_metrics_stacked(found[(i, "post_act")], activation, threshold)
            for i in range(1, self.spec.depth + 1)
        }
        w_norms = {i: torch.linalg.vector_norm(p[f"w{i}"][chosen], dim=(1, 2)).tolist() for i in metrics}
        g_norms = {i: torch.linalg.vector_norm(grads[f"w{i}"][chosen], dim=(1, 2)).tolist() for i in metrics}
        nan_imp = {i: dict.fromkeys(IMPORTANCE, float("nan")) for i in metrics}
        for pos, j in enumerate(chosen):
            per_model = {k: v[pos].T for k, v in found.items()}  # (N, C), as the reference's capture gives them
            norms = {i: (w_norms[i][pos], g_norms[i][pos]) for i in metrics}
            point_rows(
                self.cfgs[j],
                step,
                per_model,
                norms,
                nan_imp,
                self.rows[j],
                {k: h[pos] for k, h in hists.items()},
                {i: m[pos] for i, m in metrics.items()},
            )
