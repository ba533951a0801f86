"""The written-out kernel: M MLPs of one structure as one computation, the backward written out by hand.

Layout. Model j's parameters are row j of one (M, P) matrix, `theta`; its views give a layer's weight as
(M, out, in), like nn.Linear's. Activations are (M, C, N): channels by samples, samples last. A layer of every
model is then one batched matmul W @ h, and the optimizer is a few ops over the whole matrix. Batch norm of M
models' C channels is batch norm of M*C channels on the contiguous (1, M*C, N) view, through the fused kernels
autograd itself calls for nn.BatchNorm. (A first version kept activations (M, N, C) and ran batch norm through
autograd; it spent most of its time copying transposed tensors: docs/benchmarks.md.)

Why the forward is restated here rather than derived from the ordinary model (models.MLP). Autograd records and
replays some twenty small ops per layer and model, and at these sizes the cost per op dominates; written out,
a layer of all M models is a handful of ops, and a pure function from (parameters, data) to (losses, gradients)
is also what torch.compile fuses best. What can be derived is: the structure (`make_spec` reads depth, norm
layers, groups and placement from a built reference model) and the parameters (`reference_tensors` reads them
from it, so every run starts from the very draws of its seed). Every derivative is checked against autograd of
the reference model in float64, and whole runs against the autograd kernel (tests/test_written_out.py).

Supports: model mlp (regression or classification), norms none, batch, batch_manual, layer, rms and group,
every activation, placement before or after, every optimizer. Anything else (CNNs, instance and switchable
norm, dropout, a future norm) trains on the autograd kernel; `unsupported(cfg)` says why.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from normbench.engine.base import IMPORTANCE, Probe, accuracies, losses, targets
from normbench.nn.activations import Activation
from normbench.registry import ACTIVATIONS

if TYPE_CHECKING:
    from normbench.config import RunConfig

# batch_manual trains as batch (the same function, its backward written by hand in norms.py).
NORMS_WRITTEN_OUT = ("none", "batch", "batch_manual", "layer", "rms", "group")

Tensors = dict[str, torch.Tensor]
Shapes = tuple[tuple[str, tuple[int, ...]], ...]


def unsupported(cfg: RunConfig) -> str | None:
    """Why this kernel cannot train `cfg`, or None when it can."""
    if cfg.model.name != "mlp":
        return f"model {cfg.model.name} (the written-out kernel has MLPs only)"
    if cfg.model.norm not in NORMS_WRITTEN_OUT:
        return f"norm {cfg.model.norm} (the written-out kernel has {', '.join(NORMS_WRITTEN_OUT)})"
    if cfg.model.dropout:
        return "model.dropout (the written-out kernel has no dropout)"
    return None


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
            size = math.prod(shape)
            out[name] = flat[:, at : at + size].view(flat.shape[0], *shape)
            at += size
        return out

    def flatten(self, tensors: Tensors, shapes: Shapes | None = None) -> torch.Tensor:
        """The inverse of views: the (M, P) matrix from named (M, ...) tensors."""
        m = max(t.shape[0] for t in tensors.values())
        order = self.shapes if shapes is None else shapes
        return torch.cat([tensors[name].expand(m, *shape).reshape(m, -1) for name, shape in order], dim=1)


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
    """t (M, C, N) viewed so that the norm's statistics are over `dims`: the channels for layer and rms norm, the
    channels of each group for group norm (M, G, C/G, N)."""
    if spec.norm == "group":
        return t.reshape(t.shape[0], spec.groups[i], -1, t.shape[-1]), (2,)
    return t, (1,)


def _norm_forward(spec: Spec, p: Tensors, i: int, z: torch.Tensor, mode: str, stats: Tensors | None):
    """The norm of layer i. Returns the output, what the backward needs, and for batch norm in mode 'train' the
    batch's (mean, unbiased variance), as PyTorch's running update takes them."""
    if i not in spec.norm_layers:
        return z, None, None
    if spec.norm == "batch":
        return _batch_norm_forward(spec, p, i, z, mode, stats)
    zz, dims = _grouped(spec, i, z)
    if spec.norm == "rms":  # no centring: divide by the root mean square
        d, var = zz, (zz * zz).mean(dims, keepdim=True)
    else:
        d = zz - zz.mean(dims, keepdim=True)
        var = (d * d).mean(dims, keepdim=True)
    rstd = torch.rsqrt(var + spec.eps)
    xhat = (d * rstd).reshape(z.shape)
    u = xhat * p[f"gamma{i}"] + p[f"beta{i}"] if spec.affine else xhat
    return u, (xhat, rstd), None


def _flat_channels(spec: Spec, p: Tensors, i: int, z: torch.Tensor):
    """Batch norm of M models' C channels is batch norm of M*C channels: z (M, C, N) as (1, M*C, N), which is
    PyTorch's own layout for it, so its fused kernels (the ones autograd calls for nn.BatchNorm) apply as they are."""
    m = p["w_head"].shape[0]
    z = z.expand(m, -1, -1)  # the input layer's data may be shared by every model
    flat = z.reshape(1, m * z.shape[1], z.shape[2])
    gamma = p[f"gamma{i}"].reshape(-1) if spec.affine else None
    beta = p[f"beta{i}"].reshape(-1) if spec.affine else None
    return flat, gamma, beta


def _batch_norm_forward(spec: Spec, p: Tensors, i: int, z: torch.Tensor, mode: str, stats: Tensors | None):
    flat, gamma, beta = _flat_channels(spec, p, i, z)
    if mode == "eval":  # the running statistics
        running = stats[f"mean{i}"].reshape(-1), stats[f"var{i}"].reshape(-1)
        out, mean, invstd = torch.native_batch_norm(flat, gamma, beta, *running, False, 0.0, spec.eps)
        batch = None
    else:  # fresh buffers with momentum 1 receive the batch's mean and unbiased variance
        running = torch.zeros_like(flat[0, :, 0]), torch.ones_like(flat[0, :, 0])
        out, mean, invstd = torch.native_batch_norm(flat, gamma, beta, *running, True, 1.0, spec.eps)
        batch = tuple(r.view(len(p["w_head"]), -1, 1) for r in running)
    return out.view(len(p["w_head"]), -1, flat.shape[2]), (flat, mean, invstd, running), batch


def _norm_backward(spec: Spec, p: Tensors, i: int, du: torch.Tensor, saved, mode: str, grads: Tensors):
    """d(loss)/d(norm input) from d(loss)/d(norm output); the scale and shift gradients go into `grads`."""
    if i not in spec.norm_layers:
        return du
    if spec.norm == "batch":
        flat, mean, invstd, running = saved
        gamma = p[f"gamma{i}"].reshape(-1) if spec.affine else None
        dz, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
            du.reshape(flat.shape),
            flat,
            gamma,
            *running,
            mean,
            invstd,
            mode == "train",
            spec.eps,
            [True, spec.affine, spec.affine],
        )
        if spec.affine:
            grads[f"gamma{i}"], grads[f"beta{i}"] = dgamma.view(du.shape[0], -1, 1), dbeta.view(du.shape[0], -1, 1)
        return dz.view(du.shape)
    xhat, rstd = saved
    if spec.affine:
        grads[f"gamma{i}"], grads[f"beta{i}"] = (du * xhat).sum(2, keepdim=True), du.sum(2, keepdim=True)
    # Statistics over the channels: g = d(loss)/d(xhat) varies along them.
    g, dims = _grouped(spec, i, du * p[f"gamma{i}"] if spec.affine else du)
    x, _ = _grouped(spec, i, xhat)
    g_x = (g * x).mean(dims, keepdim=True)
    centred = g - g.mean(dims, keepdim=True) if spec.norm != "rms" else g
    return ((centred - x * g_x) * rstd).reshape(du.shape)


class Saved(NamedTuple):
    """What the backward of one layer needs from its forward."""

    h_in: torch.Tensor | None  # the layer's input (the previous layer's output)
    norm: tuple | None  # what the layer's norm saved (None without a norm)
    act_in: torch.Tensor | None  # the activation's input
    act_out: torch.Tensor | None  # the activation's output


def forward(spec: Spec, p: Tensors, x: torch.Tensor, mode: str, stats: Tensors | None = None, found=None):
    """Outputs (M, T, N), the tape for `backward`, and each norm layer's batch statistics (mode 'train').
    `found`, if given, collects every recorded point {(layer, point): (M, C, N)}."""
    tape, batch = [], {}
    u, saved, batch[0] = _norm_forward(spec, p, 0, x, mode, stats)
    tape.append(Saved(None, saved, None, None))
    if found is not None:
        m = p["w_head"].shape[0]
        pre = x.expand(m, -1, -1)
        found[(0, "pre_norm")] = pre
        found[(0, "post_norm")] = found[(0, "post_act")] = pre if u is x else u.expand(m, -1, -1)
    h = u
    for i in range(1, spec.depth + 1):
        z = torch.matmul(p[f"w{i}"], h)
        if f"b{i}" in p:
            z = z + p[f"b{i}"]
        if spec.norm_first:
            u, saved, batch[i] = _norm_forward(spec, p, i, z, mode, stats)
            a = spec.act_fn(u)
            tape.append(Saved(h, saved, u, a))
            pre, h = z, a
        else:
            a = spec.act_fn(z)
            u, saved, batch[i] = _norm_forward(spec, p, i, a, mode, stats)
            tape.append(Saved(h, saved, z, a))
            pre, h = a, u
        if found is not None:
            found.update({(i, "pre_norm"): pre, (i, "post_norm"): u, (i, "post_act"): a})
    tape.append(Saved(h, None, None, None))  # the head's input
    out = torch.matmul(p["w_head"], h) + p["b_head"]
    return out, tape, {i: b for i, b in batch.items() if b is not None}


def backward(spec: Spec, p: Tensors, tape: list[Saved], dout: torch.Tensor, mode: str, found=None) -> Tensors:
    """Gradients of every model's own loss w.r.t. its parameters, from dout = d(loss)/d(outputs). `found`, if
    given, collects the gradient at each hidden layer's norm input {(layer, 'grad_pre_norm'): (M, C, N)}."""
    grads: Tensors = {}
    h = tape[-1].h_in
    grads["w_head"] = torch.matmul(dout, h.transpose(1, 2))
    grads["b_head"] = dout.sum(2, keepdim=True)
    dh = torch.matmul(p["w_head"].transpose(1, 2), dout)
    for i in range(spec.depth, 0, -1):
        h_in, saved, act_in, a = tape[i]  # a Saved
        if spec.norm_first:  # dh is d(loss)/d(act output)
            dz = d_pre = _norm_backward(spec, p, i, spec.act.grad(dh, act_in, a), saved, mode, grads)
        else:  # dh is d(loss)/d(norm output)
            d_pre = _norm_backward(spec, p, i, dh, saved, mode, grads)
            dz = spec.act.grad(d_pre, act_in, a)
        if found is not None:
            found[(i, "grad_pre_norm")] = d_pre
        grads[f"w{i}"] = torch.matmul(dz, h_in.transpose(1, 2))
        if f"b{i}" in p:
            grads[f"b{i}"] = dz.sum(2, keepdim=True)
        if i > 1 or "gamma0" in p:
            dh = torch.matmul(p[f"w{i}"].transpose(1, 2), dz)
    if "gamma0" in p:
        _norm_backward(spec, p, 0, dh, tape[0].norm, mode, grads)
    return grads


def train_grads(spec: Spec, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """One training step's pure part: losses (M,), accuracies (M,), the gradient (M, P), and the batch statistics
    in the layout of the running ones (M, S), the variance unbiased as PyTorch's running update takes it."""
    p = spec.views(theta)
    out, tape, batch = forward(spec, p, x, "train")
    loss, dout = losses(out, y, spec.classification)
    correct = accuracies(out, y, spec.classification)
    stats = {}
    for i, (mean, var) in batch.items():
        stats[f"mean{i}"], stats[f"var{i}"] = mean, var
    batch_stats = spec.flatten(stats, spec.stat_shapes) if stats else theta[:, :0]
    return loss, correct, spec.flatten(backward(spec, p, tape, dout, "train")), batch_stats


def evaluate(spec: Spec, theta: torch.Tensor, stats: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mode: str):
    """Losses (M,) and accuracies (M,) with the norms on batch ('train') or running ('eval') statistics."""
    out = forward(spec, spec.views(theta), x, mode, spec.views(stats, spec.stat_shapes))[0]
    return losses(out, y, spec.classification)[0], accuracies(out, y, spec.classification)


_compiled: dict[tuple[Spec, str], Callable] = {}


def compiled(spec: Spec, what: str) -> Callable:
    """train_grads (what 'step') or evaluate ('evaluate') for `spec` through torch.compile, one per structure in a
    process: a stack of the same structure reuses it (and its compiled graphs, one per data shape and mode)
    instead of tracing and compiling again."""
    if (spec, what) not in _compiled:
        fn = functools.partial(train_grads if what == "step" else evaluate, spec)
        _compiled[(spec, what)] = torch.compile(fn, dynamic=False)
    return _compiled[(spec, what)]


# ---------------------------------------------------------------------------------------------------------------
# The kernel


class WrittenOutKernel:
    """The kernel interface (base.py) over `forward`, `backward` and `train_grads`."""

    name = "written-out"

    def __init__(self, models: list[nn.Module], cfgs: list[RunConfig], classification: bool, device, compile=False):
        self.spec = spec = make_spec(models[0], cfgs[0], classification)
        tensors = [reference_tensors(m) for m in models]
        self.theta = torch.stack([spec.flatten({k: v[None] for k, v in p.items()})[0] for p, _ in tensors])
        self.theta = self.theta.detach().to(device)
        self.grad = torch.zeros_like(self.theta)
        self.stats_flat = self.theta[:, :0]  # (M, 0) without running statistics
        if spec.stat_shapes:
            rows = [spec.flatten({k: v[None] for k, v in s.items()}, spec.stat_shapes)[0] for _, s in tensors]
            self.stats_flat = torch.stack(rows).detach().to(device)
        self.stats = spec.views(self.stats_flat, spec.stat_shapes)
        self.pending = self.stats_flat
        self.step_fn = compiled(spec, "step") if compile else functools.partial(train_grads, spec)
        self.evaluate_fn = compiled(spec, "evaluate") if compile else functools.partial(evaluate, spec)
        at, self.layer_weights = 0, {}
        for name, shape in spec.shapes:
            if name.startswith("w") and name[1:].isdigit():
                self.layer_weights[int(name[1:])] = slice(at, at + math.prod(shape))
            at += math.prod(shape)

    def columns(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples as the last axis: x (m, N, ...) -> (m, F, N)."""
        return x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2).contiguous(), targets(y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, correct, self.grad, batch = self.step_fn(self.theta, x, y)
        if self.spec.stat_shapes:  # PyTorch's running update: (1 - momentum) * running + momentum * batch
            self.pending = self.stats_flat.lerp(batch, self.spec.momentum)
        return loss, correct

    def commit(self, active: torch.Tensor) -> None:
        if self.spec.stat_shapes:
            self.stats_flat.copy_(torch.where(active[:, None], self.pending, self.stats_flat))

    @torch.no_grad()
    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, _, grad, _ = self.step_fn(self.theta, x, y)
        return loss, grad

    def running_stats(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        names = [name for name, _ in self.spec.stat_shapes if name.startswith("mean")]
        return {int(n[4:]): (self.stats[n][..., 0], self.stats[f"var{n[4:]}"][..., 0]) for n in names}

    def step_counters(self) -> list[torch.Tensor]:
        return []  # no noisy batch norm, no dropout here (unsupported)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.evaluate_fn(self.theta, self.stats_flat, x, y, mode)

    @torch.no_grad()
    def probe(self, x: torch.Tensor, y: torch.Tensor, mode: str, time: bool = False) -> Probe:
        p = self.spec.views(self.theta)
        found: dict[tuple[int, str], torch.Tensor] = {}
        out, tape, _ = forward(self.spec, p, x, mode, self.stats, found)
        grads = backward(self.spec, p, tape, losses(out, y, self.spec.classification)[1], mode, found)
        nan = torch.full((len(self.theta), len(IMPORTANCE)), float("nan"))
        return Probe(found, self.spec.flatten(grads), dict.fromkeys(range(1, self.spec.depth + 1), nan))
