"""Activations, weight initializations and models, chosen by name.

A model is a stack of role-named blocks so that recording can find its points by name:

    layer0.norm                      the input normalization (identity unless model.normalize_input)
    layer{i}.fc -> layer{i}.norm -> layer{i}.act      hidden layer i = 1..depth  (placement: before)
    layer{i}.fc -> layer{i}.act  -> layer{i}.norm                                (placement: after)
    head                             the linear output layer, never normalized

`recorded_layers(model)` lists the blocks; record.py hooks their `norm` and `act` children.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from normbench.norms import NORMS
from normbench.registry import Registry

if TYPE_CHECKING:
    from normbench.config import InitConfig, ModelConfig


# ---------------------------------------------------------------------------------------------------------------
# Activations


@dataclass(frozen=True)
class Activation:
    make: Callable[[], nn.Module]
    # Which post-activation values count as saturated, given a threshold in (0, 1); None: never saturates.
    saturated: Callable[[torch.Tensor, float], torch.Tensor] | None = None


ACTIVATIONS: Registry[Activation] = Registry("activation")
ACTIVATIONS.register("relu", help="max(0, x); never saturates, but a unit can die (0 for every input)")(
    Activation(nn.ReLU)
)
ACTIVATIONS.register("tanh", help="saturated when |a| > threshold")(Activation(nn.Tanh, lambda a, t: a.abs() > t))
# Sigmoid's bounds are 0 and 1: map to (-1, 1) so one threshold means the same closeness to a bound as for tanh.
ACTIVATIONS.register("sigmoid", help="saturated when |2a - 1| > threshold")(
    Activation(nn.Sigmoid, lambda a, t: (2 * a - 1).abs() > t)
)
ACTIVATIONS.register("leaky_relu", aliases=("lrelu",), help="max(0.01x, x); never saturates")(
    Activation(lambda: nn.LeakyReLU(0.01))
)
ACTIVATIONS.register("elu", help="x or exp(x) - 1; saturated when a < -threshold (near its bound -1)")(
    Activation(nn.ELU, lambda a, t: a < -t)
)
ACTIVATIONS.register("identity", aliases=("linear",), help="no activation")(Activation(nn.Identity))


# ---------------------------------------------------------------------------------------------------------------
# Weight initializations: fn(weight, cfg) in place, under torch.no_grad()

INITS: Registry[Callable[[torch.Tensor, InitConfig], None]] = Registry("init")


@INITS.register("normal")
def _normal(w: torch.Tensor, cfg: InitConfig) -> None:
    """Normal(0, std): the seed uses std 1.0 (saturates/explodes) and 0.1 ("a bad init")."""
    nn.init.normal_(w, 0.0, cfg.std)


@INITS.register("xavier", aliases=("glorot",))
def _xavier(w: torch.Tensor, cfg: InitConfig) -> None:
    """Xavier/Glorot normal: std = gain * sqrt(2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(w, gain=cfg.gain)


@INITS.register("kaiming", aliases=("he",))
def _kaiming(w: torch.Tensor, cfg: InitConfig) -> None:
    """Kaiming/He normal for ReLU: std = sqrt(2 / fan_in)."""
    nn.init.kaiming_normal_(w, nonlinearity="relu")


# ---------------------------------------------------------------------------------------------------------------
# Blocks and models


class InputBlock(nn.Module):
    """Layer 0: the input, optionally normalized (the seed batch-normalizes x too). Its activation is identity."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm
        self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(x))


class DenseBlock(nn.Module):
    """fc -> norm -> act (placement 'before', as in the BN paper and the seed) or fc -> act -> norm ('after')."""

    def __init__(self, fc: nn.Module, norm: nn.Module, act: nn.Module, placement: str):
        super().__init__()
        self.fc, self.norm, self.act = fc, norm, act
        self.norm_first = placement == "before"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.act(self.norm(h)) if self.norm_first else self.norm(self.act(h))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, in_features: int, out_features: int):
        super().__init__()
        norm_cls = NORMS.get(cfg.norm)
        act = ACTIVATIONS.get(cfg.activation)

        def norm(width: int) -> nn.Module:
            return norm_cls(width, eps=cfg.norm_eps, momentum=cfg.norm_momentum, affine=cfg.norm_affine)

        self.depth = cfg.depth
        self.layer0 = InputBlock(norm(in_features) if cfg.normalize_input else nn.Identity())
        width_in = in_features
        for i in range(1, cfg.depth + 1):
            fc = nn.Linear(width_in, cfg.width, bias=cfg.bias)
            self.add_module(f"layer{i}", DenseBlock(fc, norm(cfg.width), act.make(), cfg.placement))
            width_in = cfg.width
        self.head = nn.Linear(width_in, out_features)
        init_linear_layers(self, cfg.weight_init, cfg.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) -> (N, out)
        for block in recorded_layers(self):
            x = block(x)
        return self.head(x)


def init_linear_layers(model: nn.Module, weight_init: InitConfig, bias_init: float) -> None:
    init = INITS.get(weight_init.name)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                init(m.weight, weight_init)
                if m.bias is not None:
                    nn.init.constant_(m.bias, bias_init)


def recorded_layers(model: nn.Module) -> list[nn.Module]:
    """[layer0, layer1, ..., layerD]: the blocks whose norm/act outputs are recorded, input first."""
    return [getattr(model, f"layer{i}") for i in range(model.depth + 1)]


MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.register("mlp", help="depth x width fully connected layers, each fc -> norm -> act, then a linear head")(MLP)


def build_model(cfg: ModelConfig, in_features: int, out_features: int) -> nn.Module:
    return MODELS.get(cfg.name)(cfg, in_features, out_features)


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
