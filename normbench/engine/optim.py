"""The optimizers: one implementation for every kernel, over the (M, P) matrix of M models' parameters.

Each rule is the update torch.optim applies, written as a few whole-matrix ops with a learning rate per model
(so runs of one structure but different learning rates train together). tests/test_optim.py checks every rule,
with and without weight decay, against torch.optim on each model separately, in float64.

Adding an optimizer is one function and one `register` line: fn(g, state, t, lr, cfg) -> the update to subtract,
where g is the gradient with weight decay added, state a dict the rule keeps its buffers in, t the step (1, 2, ...)
and lr an (M, 1) column (train.lr, times the linear warm-up's share in the first train.warmup updates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from normbench.registry import OPTIMIZERS

if TYPE_CHECKING:
    from normbench.config import RunConfig, TrainConfig

Rule = Callable[[torch.Tensor, dict[str, torch.Tensor], int, torch.Tensor, "TrainConfig"], torch.Tensor]


@OPTIMIZERS.register("sgd", aliases=("gd",), help="plain (stochastic) gradient descent, as the tutorial")
def _sgd(g, state, t, lr, c):
    return lr * g


def _heavy_ball(g: torch.Tensor, state: dict[str, torch.Tensor], mu: float) -> torch.Tensor:
    buf = state.get("buf")
    state["buf"] = g.clone() if buf is None else buf.mul_(mu).add_(g)
    return state["buf"]


@OPTIMIZERS.register("momentum", help="SGD with heavy-ball momentum (train.momentum)")
def _momentum(g, state, t, lr, c):
    return lr * _heavy_ball(g, state, c.momentum)


@OPTIMIZERS.register("nesterov", help="SGD with Nesterov momentum (train.momentum)")
def _nesterov(g, state, t, lr, c):
    return lr * g.add(_heavy_ball(g, state, c.momentum), alpha=c.momentum)


@OPTIMIZERS.register("adam", help="Adam (train.betas; eps 1e-8)")
def _adam(g, state, t, lr, c):
    b1, b2 = c.betas
    m = state.setdefault("m", torch.zeros_like(g)).lerp_(g, 1 - b1)
    v = state.setdefault("v", torch.zeros_like(g)).mul_(b2).addcmul_(g, g, value=1 - b2)
    return (lr / (1 - b1**t)) * m / (v.sqrt() / (1 - b2**t) ** 0.5 + 1e-8)


def warmup_factor(t: int, warmup: int) -> float:
    """The share of lr that update t (1, 2, ...) takes under a linear warm-up of `warmup` updates (0: none)."""
    return min(1.0, t / warmup) if warmup else 1.0


class FlatOptimizer:
    """The configured rule over the whole matrix; a model that is not active (diverged) keeps its parameters."""

    def __init__(self, cfgs: list[RunConfig], device: torch.device | str = "cpu", dtype=torch.float32):
        self.cfg = cfgs[0].train  # everything but lr is shared by a stack
        self.rule: Rule = OPTIMIZERS.get(self.cfg.optimizer)
        self.lr = torch.tensor([c.train.effective_lr() for c in cfgs], device=device, dtype=dtype).view(-1, 1)
        self.state: dict[str, torch.Tensor] = {}
        self.t = 0

    def next_lr(self) -> torch.Tensor:
        """The (M, 1) learning rates the next update takes (warm-up included)."""
        return self.lr * warmup_factor(self.t + 1, self.cfg.warmup)

    def _update(self, theta: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        g = grad.add(theta, alpha=self.cfg.weight_decay) if self.cfg.weight_decay else grad
        return self.rule(g, state, t, self.lr * warmup_factor(t, self.cfg.warmup), self.cfg)

    @torch.no_grad()
    def step(self, theta: torch.Tensor, grad: torch.Tensor, active: torch.Tensor) -> None:
        self.t += 1
        update = self._update(theta, grad, self.state, self.t)
        theta.sub_(update.masked_fill_(~active[:, None], 0.0))  # a diverged model's NaN update is kept out

    @torch.no_grad()
    def peek(self, theta: torch.Tensor, grad: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The update (M, P) that `step(theta, grad, active)` would subtract next, computed by the same ops on a copy
        of the state: nothing here moves (neither the buffers nor the step count)."""
        state = {k: v.clone() for k, v in self.state.items()}
        return self._update(theta, grad, state, self.t + 1).masked_fill_(~active[:, None], 0.0)
