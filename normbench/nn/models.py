"""Weight initializations and models, chosen by name (activations: activations.py, norms: norms.py).

A model is a stack of role-named blocks so that recording can find its points by name:

    layer0.norm                      the input normalization (identity unless model.normalize_input)
    layer{i}.fc -> layer{i}.norm -> layer{i}.act      hidden layer i = 1..depth  (placement: before)
    layer{i}.fc -> layer{i}.act  -> layer{i}.norm                                (placement: after)
    then layer{i}.drop                               dropout (identity unless model.dropout)
    head                             the linear output layer, never normalized

In the cnn, `fc` is a convolution and each block ends with `layer{i}.pool`; the head sees the flattened map.
`recorded_layers(model)` lists the blocks; record.py hooks their `norm` and `act` children.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from normbench.nn.norms import step_generator
from normbench.registry import ACTIVATIONS, INITS, MODELS, NORMS

if TYPE_CHECKING:
    from normbench.config import InitConfig, ModelConfig


# ---------------------------------------------------------------------------------------------------------------
# Weight initializations: fn(weight, cfg) in place, under torch.no_grad()


@INITS.register("normal")
def _normal(w: torch.Tensor, cfg: InitConfig) -> None:
    """Normal(0, std): the tutorial uses std 1.0 (saturates/explodes) and 0.1 ("a bad init")."""
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
    """Layer 0: the input, optionally normalized (the tutorial batch-normalizes x too). Its activation is identity."""

    def __init__(self, norm: nn.Module, flatten: bool = False):
        super().__init__()
        self.norm = norm
        self.act = nn.Identity()
        self.flatten = flatten  # images reach an MLP as flat vectors (N, C*H*W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(x.flatten(1) if self.flatten else x))


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014, as nn.Dropout): in training each value is zeroed with probability
    p and the others scaled by 1 / (1 - p); eval mode passes values through.

    Like noisy batch norm's noise, the mask of training step t depends on the run's seed, the layer, t and the
    value's shape alone (`key` and the buffer running_step, held back and restored by the kernels with the running
    statistics), so runs trained in a stack equal each run alone, and a measurement's forward on the step's batch
    sees the step's very mask and moves nothing."""

    def __init__(self, p: float, key: tuple[int, int]):
        super().__init__()
        self.p, self.key = p, tuple(key)
        self.register_buffer("running_step", torch.zeros(()))

    def mask(self, step: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The kept values (True) at training step `step` for values of `shape`."""
        g = step_generator(self.key, step, stream=0x5EED)
        return torch.rand(shape, generator=g, dtype=torch.float64) >= self.p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = self.mask(int(self.running_step), tuple(x.shape)).to(x.device)
        with torch.no_grad():
            self.running_step += 1
        return x * keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """fc -> norm -> act (placement 'before', as in the BN paper and the tutorial) or fc -> act -> norm ('after'),
    then pool (identity in the MLP), then dropout (identity unless model.dropout)."""

    def __init__(
        self,
        fc: nn.Module,
        norm: nn.Module,
        act: nn.Module,
        placement: str,
        pool: nn.Module | None = None,
        drop: nn.Module | None = None,
    ):
        super().__init__()
        self.fc, self.norm, self.act = fc, norm, act
        self.pool = pool or nn.Identity()
        self.drop = drop or nn.Identity()
        self.norm_first = placement == "before"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.drop(self.pool(self.act(self.norm(h)) if self.norm_first else self.norm(self.act(h))))


def _dropout(cfg: ModelConfig, layer: int) -> nn.Module | None:
    """Hidden layer `layer`'s dropout, its masks drawn from the run's seed (set just before); None when off."""
    return Dropout(cfg.dropout, (torch.initial_seed(), layer)) if cfg.dropout else None


def _norm_opts(cfg: ModelConfig, layer: int, norm_cls: type) -> dict:
    opts = dict(eps=cfg.norm_eps, momentum=cfg.norm_momentum, affine=cfg.norm_affine)
    if getattr(norm_cls, "noisy", False):  # its noise: drawn from the run's seed (set just before)
        opts |= {"noise": cfg.norm_noise, "key": (torch.initial_seed(), layer)}
    return opts


def _norm_factory(cfg: ModelConfig) -> Callable[[int, int], nn.Module]:
    """(layer, width) -> layer's norm."""
    norm_cls = NORMS.get(cfg.norm)
    return lambda layer, width: norm_cls(width, groups=cfg.norm_groups, **_norm_opts(cfg, layer, norm_cls))


# Norms whose statistics are taken per sample over the features: over a single feature they erase the input.
PER_SAMPLE = ("layer", "group", "rms")


def _input_norm(cfg: ModelConfig, features: int, values_per_sample: int) -> nn.Module:
    """Layer 0's norm. Group norm uses gcd(norm_groups, channels) groups there, since the data's channel count
    (1 for grey images, 3 for colour) rarely divides by the hidden layers' group count."""
    if not cfg.normalize_input:
        return nn.Identity()
    if cfg.norm in PER_SAMPLE and values_per_sample == 1:
        raise ValueError(
            f"model.normalize_input: {cfg.norm} norm over a single input value per sample would turn every input "
            "into a constant; use norm batch here, or normalize_input false"
        )
    norm_cls = NORMS.get(cfg.norm)
    if getattr(norm_cls, "noisy", False):  # noise goes after the hidden layers' norms, not onto the data
        norm_cls = NORMS.get("batch")
    return norm_cls(features, groups=math.gcd(cfg.norm_groups, features), **_norm_opts(cfg, 0, norm_cls))


def _use_bias(cfg: ModelConfig) -> bool:
    # 'auto': a norm right after the layer removes any constant per channel, so its bias is redundant
    # (Ioffe & Szegedy 2015, sec. 3.2: z = g(BN(Wu))). With placement 'after' the activation comes between, and
    # the bias matters.
    if cfg.bias == "auto":
        return cfg.norm == "none" or cfg.placement == "after"
    return bool(cfg.bias)


class Model(nn.Module):
    """layer0 (input norm), layer1..layerD (blocks), head. Subclasses build the blocks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in recorded_layers(self):
            x = block(x)
        return self.head(x.flatten(1))


class MLP(Model):
    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], out_features: int):
        super().__init__()
        norm, act = _norm_factory(cfg), ACTIVATIONS.get(cfg.activation)
        in_features = math.prod(input_shape)
        self.depth = cfg.depth
        self.layer0 = InputBlock(_input_norm(cfg, in_features, in_features), flatten=True)
        width_in = in_features
        for i in range(1, cfg.depth + 1):
            fc = nn.Linear(width_in, cfg.width, bias=_use_bias(cfg))
            self.add_module(
                f"layer{i}", Block(fc, norm(i, cfg.width), act.make(), cfg.placement, drop=_dropout(cfg, i))
            )
            width_in = cfg.width
        self.head = nn.Linear(width_in, out_features)
        init_weights(self, cfg.weight_init, cfg.bias_init)


class CNN(Model):
    """Blocks of conv (kernel k, 'same' padding) -> norm -> act -> pool, one per entry of model.channels."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], out_features: int):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"the cnn model needs images (C, H, W); this data set gives shape {input_shape}")
        norm, act = _norm_factory(cfg), ACTIVATIONS.get(cfg.activation)
        c_in, h, w = input_shape
        self.depth = len(cfg.channels)
        self.layer0 = InputBlock(_input_norm(cfg, c_in, math.prod(input_shape)))
        for i, c_out in enumerate(cfg.channels, start=1):
            conv = nn.Conv2d(c_in, c_out, cfg.kernel, padding=cfg.kernel // 2, bias=_use_bias(cfg))
            pool = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2), "none": nn.Identity()}[cfg.pool]
            if cfg.pool != "none":
                if h < 2 or w < 2:
                    raise ValueError(f"model.channels: too many pooled blocks for {input_shape[1:]} images")
                h, w = h // 2, w // 2
            self.add_module(f"layer{i}", Block(conv, norm(i, c_out), act.make(), cfg.placement, pool, _dropout(cfg, i)))
            c_in = c_out
        self.head = nn.Linear(c_in * h * w, out_features)
        init_weights(self, cfg.weight_init, cfg.bias_init)


def init_weights(model: nn.Module, weight_init: InitConfig, bias_init: float) -> None:
    """Every linear and conv layer (the head too, as in the tutorial): weights by `weight_init`, biases constant."""
    init = INITS.get(weight_init.name)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                init(m.weight, weight_init)
                if m.bias is not None:
                    nn.init.constant_(m.bias, bias_init)


def recorded_layers(model: nn.Module) -> list[nn.Module]:
    """[layer0, layer1, ..., layerD]: the blocks whose norm/act outputs are recorded, input first."""
    return [getattr(model, f"layer{i}") for i in range(model.depth + 1)]


MODELS.register("mlp", help="depth x width fully connected layers, each fc -> norm -> act, then a linear head")(MLP)
MODELS.register("cnn", help="conv -> norm -> act -> pool blocks (model.channels), then a linear head")(CNN)


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], out_features: int) -> nn.Module:
    return MODELS.get(cfg.name)(cfg, tuple(input_shape), out_features)
