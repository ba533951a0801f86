"""The one optimizer implementation against torch.optim, every rule, with and without weight decay, in float64."""

from __future__ import annotations

import pytest
import torch

from normbench.bench import torch_optimizer
from normbench.config import RunConfig
from normbench.engine.optim import FlatOptimizer
from normbench.registry import OPTIMIZERS


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("kind", OPTIMIZERS.names())
def test_flat_optimizer_equals_torch_optim(kind, weight_decay):
    """Three models with their own learning rates, seven steps of random gradients: every parameter as
    torch.optim leaves it, up to float64 rounding of a few operations (1e-13 relative)."""
    cfgs = [
        RunConfig.model_validate(
            {
                "train": {
                    "optimizer": kind,
                    "lr": lr,
                    "weight_decay": weight_decay,
                    "momentum": 0.8,
                    "betas": [0.85, 0.99],
                }
            }
        )
        for lr in (0.1, 0.01, 0.003)
    ]
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 11, generator=g, dtype=torch.float64)
    refs = [torch.nn.Parameter(theta[j].clone()) for j in range(3)]
    opts = [torch_optimizer([p], c.train) for p, c in zip(refs, cfgs, strict=True)]
    flat = FlatOptimizer(cfgs, dtype=torch.float64)
    active = torch.ones(3, dtype=torch.bool)
    for _ in range(7):
        grad = torch.randn(3, 11, generator=g, dtype=torch.float64)
        flat.step(theta, grad, active)
        for j, (p, opt) in enumerate(zip(refs, opts, strict=True)):
            p.grad = grad[j].clone()
            opt.step()
    for j, p in enumerate(refs):
        torch.testing.assert_close(theta[j], p.detach(), rtol=1e-13, atol=1e-15)


def test_a_frozen_model_keeps_its_parameters():
    cfgs = [RunConfig.model_validate({"train": {"optimizer": "adam", "lr": 0.1}}) for _ in range(2)]
    theta = torch.ones(2, 4)
    before = theta.clone()
    FlatOptimizer(cfgs).step(theta, torch.tensor([[1.0] * 4, [float("nan")] * 4]), torch.tensor([True, False]))
    assert torch.equal(theta[1], before[1]) and not torch.equal(theta[0], before[0])


@pytest.mark.parametrize("kind", OPTIMIZERS.names())
def test_linear_warmup_equals_torch_linear_lr(kind):
    """train.warmup w: update t takes lr * min(1, t / w), as torch.optim.lr_scheduler.LambdaLR with that factor."""
    cfg = RunConfig.model_validate({"train": {"optimizer": kind, "lr": 0.1, "warmup": 4}})
    theta = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = torch.nn.Parameter(theta[0].clone())
    ref = torch_optimizer([p], cfg.train)
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lambda step: min(1.0, (step + 1) / 4))
    flat = FlatOptimizer([cfg], dtype=torch.float64)
    active = torch.ones(1, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    for _ in range(7):
        grad = torch.randn(1, 5, dtype=torch.float64, generator=g)
        flat.step(theta, grad, active)
        p.grad = grad[0].clone()
        ref.step()
        sched.step()
        torch.testing.assert_close(theta[0], p.detach(), rtol=1e-13, atol=1e-13)
