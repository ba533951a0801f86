"""The stacked engine: many MLP runs of one structure trained as one computation.

    groups = stack_groups(runs)                 # runs that share a structure, each group a list of Run
    results = train_stacked(group_configs)      # one RunResult per config, as train_run would give

Runs stack when they share the model shape, norm, activation, optimizer kind, batch size, data and recording;
seeds (init and batch order), learning rates, init scales and bias inits may differ inside a stack. Parameters
carry a leading model axis M: a hidden layer's weight is (M, in, out) and x is (M, N, in), so one batched matmul
(`torch.baddbmm`) does every model's layer at once. The per-model losses are summed, not averaged, so each model
gets exactly the gradient it would get alone; the optimizers are written out elementwise with a per-model lr.
Each model is initialized by the reference code (same seed, same draws), so a stacked run reproduces its
per-run twin up to float32 rounding (tests/test_stacked.py). Recording runs on the stacked tensors: losses of
every model in one pass, histograms of all models at once (histograms_stacked: bucket arithmetic and
scatter_add), unit metrics per model slice with the reference functions.

Supported: model mlp on the quadratic data, norm none or batch, optimizers sgd, momentum, nesterov, adam;
anything else falls back to the per-run engine (`stackable`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from normbench.config import Run, RunConfig
from normbench.data import build_dataset
from normbench.models import ACTIVATIONS, build_model
from normbench.record import IMPORTANCE, accuracy, hist_range, histograms_stacked, point_rows
from normbench.train import RunResult, single_thread, total_steps

STACKABLE_NORMS = ("none", "batch")
STACKABLE_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


def stackable(cfg: RunConfig) -> bool:
    return (
        cfg.model.name == "mlp"
        and cfg.data.name == "quadratic"  # regression only, for now
        and cfg.model.norm in STACKABLE_NORMS
        and cfg.train.optimizer in STACKABLE_OPTIMIZERS
    )


def structure_key(cfg: RunConfig) -> str:
    """Everything but what may vary inside a stack: seed, lr, init scale and bias init."""
    d = cfg.model_dump(mode="json")
    d.pop("seed")
    d["train"].pop("lr")
    d["model"]["weight_init"].pop("std")
    d["model"].pop("bias_init")
    return repr(sorted(d.items()))


def stack_groups(runs: list[Run], max_models: int = 16) -> list[list[Run]]:
    """Runs grouped by structure, in stacks of at most `max_models`: on this 2-core CPU a stack of 16 seed-sized
    MLPs was fastest per model (measured 647 model-steps/s at 16, 618 at 8, 593 at 32, 415 at 64: larger stacks
    fall out of the cache, these steps being bound by memory, not arithmetic)."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[structure_key(run.config)].append(run)
    return [g[i : i + max_models] for g in groups.values() for i in range(0, len(g), max_models)]


class StackedMLP:
    """M MLPs as stacked tensors, copied from M reference models (so initialization is identical)."""

    def __init__(self, models: list[nn.Module], cfg: RunConfig):
        self.cfg, self.m = cfg, len(models)
        self.depth = cfg.model.depth
        self.act = ACTIVATIONS.get(cfg.model.activation).make()
        self.norm_first = cfg.model.placement == "before"
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}

        def stack(get: Callable[[nn.Module], torch.Tensor | None], name: str, store: dict) -> None:
            values = [get(m) for m in models]
            if values[0] is not None:
                store[name] = torch.stack([v.detach().clone() for v in values]).requires_grad_(store is self.params)

        for i in range(1, self.depth + 1):
            stack(lambda m, i=i: getattr(m, f"layer{i}").fc.weight.T, f"w{i}", self.params)  # (M, in, out)
            stack(lambda m, i=i: _row(getattr(m, f"layer{i}").fc.bias), f"b{i}", self.params)  # (M, 1, out)
        stack(lambda m: m.head.weight.T, "w_head", self.params)
        stack(lambda m: _row(m.head.bias), "b_head", self.params)
        self.norm_layers = [
            i for i in range(self.depth + 1) if hasattr(getattr(models[0], f"layer{i}").norm, "running_mean")
        ]
        for i in self.norm_layers:
            stack(lambda m, i=i: _row(getattr(m, f"layer{i}").norm.weight), f"gamma{i}", self.params)
            stack(lambda m, i=i: _row(getattr(m, f"layer{i}").norm.bias), f"beta{i}", self.params)
            stack(lambda m, i=i: getattr(m, f"layer{i}").norm.running_mean, f"mean{i}", self.buffers)
            stack(lambda m, i=i: getattr(m, f"layer{i}").norm.running_var, f"var{i}", self.buffers)
        mc = cfg.model
        self.eps, self.momentum = mc.norm_eps, mc.norm_momentum

    def _norm(self, i: int, h: torch.Tensor, mode: str, update: bool) -> torch.Tensor:
        """Batch norm of h (M, N, C) per model over N. It is PyTorch's batch norm over M*C channels: the same
        kernel as the reference engine, forward and backward, so the two engines round alike."""
        if i not in self.norm_layers:
            return h
        m, n, c = h.shape
        flat = h.transpose(0, 1).reshape(n, m * c)  # (N, M*C)
        track = mode == "eval" or update
        gamma, beta = self.params.get(f"gamma{i}"), self.params.get(f"beta{i}")
        out = F.batch_norm(
            flat,
            self.buffers[f"mean{i}"].view(-1) if track else None,
            self.buffers[f"var{i}"].view(-1) if track else None,
            gamma.reshape(-1) if gamma is not None else None,
            beta.reshape(-1) if beta is not None else None,
            training=mode == "train",
            momentum=self.momentum,
            eps=self.eps,
        )
        return out.reshape(n, m, c).transpose(0, 1)

    def forward(
        self, x: torch.Tensor, mode: str = "train", update: bool = True, found: dict | None = None
    ) -> torch.Tensor:
        """x (M, N, F) -> (M, N, T). `found`, if given, collects every recorded point as (M, N, C) tensors."""
        p = self.params
        h = x
        post = self._norm(0, h, mode, update)
        if found is not None:
            found.update({(0, "pre_norm"): h, (0, "post_norm"): post, (0, "post_act"): post})
        h = post
        for i in range(1, self.depth + 1):
            z = torch.bmm(h, p[f"w{i}"]) if f"b{i}" not in p else torch.baddbmm(p[f"b{i}"], h, p[f"w{i}"])
            if self.norm_first:
                pre, post = z, self._norm(i, z, mode, update)
                h = act = self.act(post)
            else:
                act = self.act(z)
                pre, post = act, self._norm(i, act, mode, update)
                h = post
            if found is not None:
                found.update({(i, "pre_norm"): pre, (i, "post_norm"): post, (i, "post_act"): act})
        return torch.baddbmm(p["b_head"], h, p["w_head"]) if "b_head" in p else torch.bmm(h, p["w_head"])


def _row(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.unsqueeze(0)  # (C,) -> (1, C): broadcasts over the N samples of one model


def _losses(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-model loss (M,) for regression targets y (N, T): the reference loss_fn, batched."""
    return (pred - y).square().sum(-1).mean(-1)


class _Optimizer:
    """SGD / momentum / nesterov / Adam as PyTorch writes them, elementwise, with a per-model lr (M, 1, 1)."""

    def __init__(self, params: dict[str, torch.Tensor], cfgs: list[RunConfig]):
        t = cfgs[0].train
        self.kind, self.mu, self.wd, self.betas = t.optimizer, t.momentum, t.weight_decay, t.betas
        self.lr = torch.tensor([c.train.effective_lr() for c in cfgs]).view(-1, 1, 1)
        self.state: dict[str, dict[str, torch.Tensor]] = {k: {} for k in params}
        self.t = 0

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], active: torch.Tensor) -> None:
        self.t += 1
        for name, p in params.items():
            g = p.grad
            if g is None:
                continue
            if self.wd:
                g = g.add(p, alpha=self.wd)
            lr = self.lr.view(-1, *([1] * (p.dim() - 1)))
            s = self.state[name]
            if self.kind == "sgd":
                update = lr * g
            elif self.kind in ("momentum", "nesterov"):
                buf = s["buf"] = g.clone() if "buf" not in s else s["buf"].mul_(self.mu).add_(g)
                update = lr * (g.add(buf, alpha=self.mu) if self.kind == "nesterov" else buf)
            else:  # adam
                b1, b2 = self.betas
                m = s["m"] = torch.zeros_like(p) if "m" not in s else s["m"]
                v = s["v"] = torch.zeros_like(p) if "v" not in s else s["v"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
                update = lr / bc1 * m / (v.sqrt() / bc2**0.5 + 1e-8)
            keep = active.view(-1, *([1] * (p.dim() - 1)))
            p.copy_(torch.where(keep, p - update, p))  # a diverged model stays frozen, its NaN kept out
            p.grad = None


def train_stacked(cfgs: list[RunConfig], on_step: Callable[[int], None] | None = None) -> list[RunResult]:
    with single_thread():
        return _train_stacked(cfgs, on_step)


def _train_stacked(cfgs: list[RunConfig], on_step: Callable[[int], None] | None) -> list[RunResult]:
    t0 = time.perf_counter()
    cfg = cfgs[0]
    data = build_dataset(cfg.data)
    if data.task != "regression":
        raise ValueError("the stacked engine trains regression MLPs only")
    models = []
    for c in cfgs:  # the reference initialization, model by model
        torch.manual_seed(c.seed)
        models.append(build_model(c.model, data.input_shape, data.out_features))
    net = StackedMLP(models, cfg)
    opt = _Optimizer(net.params, cfgs)
    m, rc, steps = len(cfgs), cfg.record, total_steps(cfg, data)
    batch_size = None if cfg.train.batch_size == "full" else cfg.train.batch_size
    n = len(data.x_train)
    size = n if batch_size is None else min(batch_size, n)
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    orders: list[torch.Tensor] = []
    cursor = n  # position in the current epoch; n forces a new epoch
    end = n - 1 if n % size == 1 and size > 1 else n  # the reference drops a last batch of one sample

    rows = [defaultdict(list) for _ in range(m)]
    active = torch.ones(m, dtype=torch.bool)
    diverged: list[int | None] = [None] * m
    splits = ["train"] + (["test"] if data.x_test is not None else [])

    def expand(t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(0).expand(m, *t.shape)

    def record_losses(step: int, which: torch.Tensor) -> None:
        with torch.no_grad():
            for split in splits:
                x, y = data.split(split)
                for mode in ("train", "eval"):
                    pred = net.forward(expand(x), mode, update=False)
                    losses = _losses(pred, y).tolist()
                    for j in which.nonzero().flatten().tolist():
                        acc = accuracy(pred[j], y)
                        rows[j]["curves"].append(
                            {"step": step, "split": split, "mode": mode, "loss": losses[j], "accuracy": acc}
                        )

    def record_layers(step: int, which: torch.Tensor) -> None:
        if not which.any():
            return
        x, y = data.split(rc.eval_split)
        found: dict[tuple[int, str], torch.Tensor] = {}
        pred = net.forward(expand(x), rc.eval_mode, update=False, found=found)
        weights = [net.params[f"w{i}"] for i in range(1, net.depth + 1)]
        grads = torch.autograd.grad(_losses(pred, y).sum(), weights)
        nan_imp = {i: dict.fromkeys(IMPORTANCE, float("nan")) for i in range(1, net.depth + 1)}
        chosen = which.nonzero().flatten().tolist()
        hists = {key: histograms_stacked(v[chosen], *hist_range(rc, *key), rc.bins) for key, v in found.items()}
        for pos, j in enumerate(chosen):
            per_model = {k: v[j].detach() for k, v in found.items()}
            w = {i: (weights[i - 1][j].detach().T, grads[i - 1][j].T) for i in range(1, net.depth + 1)}
            point_rows(cfgs[j], step, per_model, w, nan_imp, rows[j], {k: h[pos] for k, h in hists.items()})

    step = 0
    for step in range(steps + 1):
        if step % rc.loss_every == 0 or step == steps:
            record_losses(step, active)
        if step % rc.hist_every == 0 or step == steps:
            record_layers(step, active)
        if step == steps or not active.any():
            break
        if size == n and not cfg.data.shuffle:  # the seed's full batch: the same data every step, no indexing
            xb, yb = expand(data.x_train), data.y_train.unsqueeze(0)
        else:
            if cursor >= end:  # a new epoch: each model its own order, from its own seeded generator
                orders = [torch.randperm(n, generator=g) if cfg.data.shuffle else torch.arange(n) for g in gens]
                cursor = 0
            idx = torch.stack([o[cursor : cursor + size] for o in orders])  # (M, B)
            xb, yb = data.x_train[idx], data.y_train[idx]
            cursor += size
        losses = _losses(net.forward(xb, "train", update=True), yb)  # (M,)
        bad = active & ~torch.isfinite(losses)
        if bad.any():  # these models diverge at this step: record them as the reference does, then freeze them
            for j in bad.nonzero().flatten().tolist():
                diverged[j] = step
            if step % rc.loss_every:  # not recorded at the top of this step yet
                record_losses(step, bad)
            if step % rc.hist_every:
                record_layers(step, bad)
            active &= ~bad
        losses.where(active, torch.zeros_like(losses)).sum().backward()
        opt.step(net.params, active)
        if on_step is not None:
            on_step(step + 1)

    wall = (time.perf_counter() - t0) / m
    results = []
    for j in range(m):
        tables = {name: pd.DataFrame(r) for name, r in rows[j].items()}
        status = "diverged" if diverged[j] is not None else "ok"
        results.append(RunResult(status, diverged[j], diverged[j] if diverged[j] is not None else step, wall, tables))
    return results
