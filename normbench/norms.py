"""Normalization layers, chosen by name.

Every constructor takes the feature count first and the same keyword options, so layers swap freely:

    norm_cls = NORMS.get("batch")
    norm = norm_cls(30, eps=1e-3, momentum=0.1, affine=True)   # (N, 30) -> (N, 30)

On MLP features (N, C):
| name  | statistics over          | learnable        | running statistics for eval |
|-------|--------------------------|------------------|-----------------------------|
| none  | -                        | -                | -                           |
| batch | N, per feature (biased)  | gamma, beta (C)  | yes (unbiased var, EMA)     |
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from normbench.registry import Registry

NORMS: Registry[type[nn.Module]] = Registry("norm")


@NORMS.register("none", aliases=("identity",))
class NoNorm(nn.Identity):
    """No normalization: the values pass through unchanged."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()


@NORMS.register("batch", aliases=("bn", "batchnorm"))
class BatchNorm(nn.BatchNorm1d):
    """Batch norm (Ioffe & Szegedy 2015): per feature, over the batch; running statistics for eval mode."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        # momentum is PyTorch's: running = (1 - momentum) * running + momentum * batch. TF's EMA decay d is 1 - d.
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)


def has_running_stats(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in model.modules())


@contextmanager
def frozen_running_stats(model: nn.Module):
    """Run train-mode forwards (batch statistics) for measurement without moving the running statistics.

    Recording evaluates the model on the whole evaluation set; that must not count as a training step for BN's
    running mean/var, or the recording itself would change what eval mode later shows.
    """
    saved = {name: buf.clone() for name, buf in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])
