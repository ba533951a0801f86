"""Activations, chosen by name: the module, its derivative as autograd computes it, where it saturates, its bounds
and whether it is odd (the last two choose the automatic histogram range of its output: record.py)."""

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
    # The bounds of the output (lower, upper), None where unbounded: relu (0, None), tanh (-1, 1). A bounded side
    # is a fixed end of the output's automatic histogram range, so values piled up at a bound stay visible.
    bounds: tuple[float | None, float | None] = (None, None)
    # f(-x) = -f(x): the output is as symmetric about 0 as the input (an unbounded odd activation keeps the input's
    # kind of histogram range).
    odd: bool = False


ACTIVATIONS.register("relu", help="max(0, x); never saturates, but a unit can die (0 for every input)")(
    Activation(nn.ReLU, lambda g, x, y: aten.threshold_backward(g, y, 0.0), bounds=(0.0, None))
)
ACTIVATIONS.register("tanh", help="saturated when |a| > threshold")(
    Activation(
        nn.Tanh, lambda g, x, y: aten.tanh_backward(g, y), lambda a, t: a.abs() > t, bounds=(-1.0, 1.0), odd=True
    )
)
# Sigmoid's bounds are 0 and 1: map to (-1, 1) so one threshold means the same closeness to a bound as for tanh.
ACTIVATIONS.register("sigmoid", help="saturated when |2a - 1| > threshold")(
    Activation(
        nn.Sigmoid, lambda g, x, y: aten.sigmoid_backward(g, y), lambda a, t: (2 * a - 1).abs() > t, bounds=(0.0, 1.0)
    )
)
ACTIVATIONS.register("leaky_relu", aliases=("lrelu",), help="max(0.01x, x); never saturates")(
    Activation(lambda: nn.LeakyReLU(0.01), lambda g, x, y: aten.leaky_relu_backward(g, x, 0.01, False))
)
ACTIVATIONS.register("elu", help="x or exp(x) - 1; saturated when a < -threshold (near its bound -1)")(
    Activation(
        nn.ELU, lambda g, x, y: aten.elu_backward(g, 1.0, 1.0, 1.0, False, x), lambda a, t: a < -t, bounds=(-1.0, None)
    )
)
ACTIVATIONS.register("identity", aliases=("linear",), help="no activation")(
    Activation(nn.Identity, lambda g, x, y: g, odd=True)
)
