"""What every kernel shares: the interface the driver calls, the loss, and the reference models.

A kernel computes one step of M >= 1 models of one structure; the driver (driver.py) owns everything that
happens over time. Data reach a kernel as `columns(x, y)` has laid them out: x (1 or M, N, *input_shape), y
(1 or M, N, T) for regression or (1 or M, N) class indices; a leading 1 means every model sees the same samples.

    kernel.theta          (M, P) parameters, one row per model (the optimizer updates it in place)
    kernel.grad           (M, P) gradients of the last `step`
    kernel.step(x, y)     losses (M,) and accuracies (M,) of the current parameters on the batch; gradients into
                          `grad`, the batch's running statistics held back until `commit`
    kernel.commit(active) running statistics of the active models <- those of the last step
    kernel.evaluate(x, y, mode)   losses and accuracies, norms on batch ('train') or running ('eval') statistics;
                                  changes nothing
    kernel.probe(x, y, mode)      a Probe: every recorded point, and the gradient of a backward on (x, y)
                                  (time=True: a sequence model's points over time too)
    kernel.gradient(x, y)         losses (M,) and gradients (M, P) with batch statistics, as `step` computes them;
                                  changes nothing (a measurement at the current theta, e.g. after moving it)
    kernel.running_stats()        {layer i: (running mean, running variance)}, (M, C) views into the kernel's
                                  statistics (writing into them changes them), for the norms that keep them
    kernel.step_counters()        views of the training-step counters that noisy BN's noise and dropout's masks
                                  follow (each (M,)); [] when the models have none
    kernel.layer_weights  {layer i: the slice of a theta row holding hidden layer i's weight}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from normbench.nn.models import build_model

if TYPE_CHECKING:
    from normbench.config import RunConfig
    from normbench.data import Dataset


# Switchable norm's importance weights, recorded per layer (NaN for every other norm).
IMPORTANCE = tuple(f"sn_{what}_{kind}" for what in ("mean", "var") for kind in ("in", "ln", "bn"))


@dataclass
class Probe:
    """What a kernel's recording pass sees, for all M models at once."""

    # (layer, point) -> (M, C, K): channels by values, for every point of POINTS in every recorded layer and
    # 'grad_pre_norm' (d(loss)/d(pre_norm), laid out as pre_norm) in every hidden layer
    points: dict[tuple[int, str], torch.Tensor]
    grad: torch.Tensor  # (M, P) gradient of each model's loss (a mean over the probe's samples) on those samples
    importance: dict[int, torch.Tensor]  # hidden layer -> (M, len(IMPORTANCE)), NaN without switchable norm
    # A sequence model's points over time, when asked for (probe(..., time=True)): (layer, point) -> (M, N, T, C) for
    # every hidden layer's pre_norm, post_norm, post_act, pre_norm_h and post_norm_h (its hidden-to-hidden norm, if
    # any), state (h_t) and grad_state (dL/dh_t); `mask` (M, N, T) True at the real positions.
    time: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    mask: torch.Tensor | None = None


class Kernel(Protocol):
    name: str
    theta: torch.Tensor
    grad: torch.Tensor
    layer_weights: dict[int, slice]

    def columns(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def commit(self, active: torch.Tensor) -> None: ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]: ...

    def probe(self, x: torch.Tensor, y: torch.Tensor, mode: str, time: bool = False) -> Probe: ...

    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def running_stats(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]: ...

    def step_counters(self) -> list[torch.Tensor]: ...


def reference_models(cfgs: list[RunConfig], data: Dataset) -> list[nn.Module]:
    """Each run's ordinary model (models.py), initialized from its own seed: every kernel starts from these."""
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        models.append(build_model(cfg.model, data.input_shape, data.out_features))
    return models


def targets(y: torch.Tensor) -> torch.Tensor:
    """Targets as `losses` takes them: (m, N, T) -> (m, T, N); class indices (m, N) stay."""
    return y.transpose(1, 2).contiguous() if y.dim() == 3 else y


def losses(out: torch.Tensor, y: torch.Tensor, classification: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of each model (M,) and d(loss)/d(out), from outputs (M, T, N) and `targets(y)`.
    Classification: mean cross-entropy over the samples. Regression: mean over the samples of the squared error
    summed over the outputs (the tutorial's reduce_mean(reduce_sum(...)))."""
    n = out.shape[2]
    if classification:
        logp = out.log_softmax(1)
        target = y.expand(out.shape[0], -1)[:, None, :]
        loss = -logp.gather(1, target).mean((1, 2))
        dout = logp.exp().scatter_add(1, target, torch.full_like(target, -1, dtype=out.dtype)) / n
        return loss, dout
    diff = out - y
    return diff.square().sum(1).mean(1), diff * (2 / n)


def accuracies(out: torch.Tensor, y: torch.Tensor, classification: bool) -> torch.Tensor:
    """The share of samples whose largest output is their class (M,); NaN for regression."""
    if not classification:
        return torch.full((out.shape[0],), float("nan"), dtype=torch.float64, device=out.device)
    return (out.argmax(1) == y).double().mean(1)
