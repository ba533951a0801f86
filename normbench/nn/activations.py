"""Activations, chosen by name: the module, its derivative as autograd computes it, and where it saturates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from normbench.registry import ACTIVATIONS

aten = torch.ops.aten


@dataclass(frozen=True)
class Activation:
    make: Callable[[], nn.Module]
    # The gradient w.r.t. the input, from the upstream gradient g, the input x and the output y, for the kernel
    # that writes its backward out: the very kernels autograd calls for these modules, so both kernels round
    # alike. tests/test_written_out.py checks each against autograd in float64.
    grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    # Which post-activation values count as saturated, given a threshold in (0, 1); None: never saturates.
    saturated: Callable[[torch.Tensor, float], torch.Tensor] | None = None


ACTIVATIONS.register("relu", help="max(0, x); never saturates, but a unit can die (0 for every input)")(
    Activation(nn.ReLU, lambda g, x, y: aten.threshold_backward(g, y, 0.0))
)
ACTIVATIONS.register("tanh", help="saturated when |a| > threshold")(
    Activation(nn.Tanh, lambda g, x, y: aten.tanh_backward(g, y), lambda a, t: a.abs() > t)
)
# Sigmoid's bounds are 0 and 1: map to (-1, 1) so one threshold means the same closeness to a bound as for tanh.
ACTIVATIONS.register("sigmoid", help="saturated when |2a - 1| > threshold")(
    Activation(nn.Sigmoid, lambda g, x, y: aten.sigmoid_backward(g, y), lambda a, t: (2 * a - 1).abs() > t)
)
ACTIVATIONS.register("leaky_relu", aliases=("lrelu",), help="max(0.01x, x); never saturates")(
    Activation(lambda: nn.LeakyReLU(0.01), lambda g, x, y: aten.leaky_relu_backward(g, x, 0.01, False))
)
ACTIVATIONS.register("elu", help="x or exp(x) - 1; saturated when a < -threshold (near its bound -1)")(
    Activation(nn.ELU, lambda g, x, y: aten.elu_backward(g, 1.0, 1.0, 1.0, False, x), lambda a, t: a < -t)
)
ACTIVATIONS.register("identity", aliases=("linear",), help="no activation")(Activation(nn.Identity, lambda g, x, y: g))
