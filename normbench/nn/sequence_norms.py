"""Norms of sequences, chosen by name from SEQUENCE_NORMS: the norms of the rnn, lstm and transformer models
(nn/norms.py has those of the mlp and cnn). Values are (N, T, C), time before channels, with a padding mask
(N, T) of bools, True at the real positions (None: every position is real):

    norm = SEQUENCE_NORMS.get("batch_step")(32, max_steps=64, gamma=0.1)
    y = norm(x, mask)              # the whole sequence: x (N, T, C), mask (N, T) -> y (N, T, C)
    y_t = norm(x_t, mask_t, t=t)   # step t of a recurrence: x_t (N, C), mask_t (N,) -> (N, C)

| name       | statistics over                                             | running statistics (eval)              |
|------------|-------------------------------------------------------------|----------------------------------------|
| none       | -                                                           | -                                      |
| batch      | the real (n, t) of the batch, per channel: shared over time | (C,)                                   |
| batch_step | the real n at each step t, per channel (Cooijmans et al.)   | (max_steps, C); beyond, the last step's |
| layer      | C at each position (Ba et al.)                              | -                                      |
| rms        | C at each position, no centring (Zhang & Sennrich)          | -                                      |

Padded positions never enter a statistic (nor the running ones), and come out as 0; their values, however large,
change nothing at a real position. gamma and beta are per channel and shared over time (rms has gamma only, as
its paper and torch.nn.RMSNorm). Normalizing variances are population variances; running variances are unbiased,
as PyTorch's batch norm keeps them. `batch` needs the whole sequence at once (its statistics span every step), so a
recurrence can use it on the input-to-hidden path only (Laurent et al.'s sequence-wise normalization); the others
also take one step at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normbench.registry import SEQUENCE_NORMS


class SequenceNorm(nn.Module):
    """The shared constructor and the masking: subclasses normalize `x` (N, T, C) whose padded positions hold 0,
    given the float mask (N, T, 1) and the first position's time step t0."""

    default_gamma = 1.0

    def __init__(
        self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, gamma: float | None = None, max_steps=1
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        g = self.default_gamma if gamma is None else gamma
        self.weight = nn.Parameter(torch.full((num_features,), float(g))) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, t: int | None = None) -> torch.Tensor:
        step = t is not None
        if step:  # one time step: (N, C) -> (N, 1, C)
            x, mask = x[:, None], None if mask is None else mask[:, None]
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        keep = mask[..., None]
        # Padding is set to 0 before any arithmetic: an inf there would otherwise turn a gradient into NaN.
        y = self.normalize(torch.where(keep, x, 0.0), keep.to(x.dtype), t or 0)
        y = torch.where(keep, y, 0.0)
        return y[:, 0] if step else y

    def normalize(self, x: torch.Tensor, m: torch.Tensor, t0: int) -> torch.Tensor:
        raise NotImplementedError

    def scale_shift(self, x_hat: torch.Tensor) -> torch.Tensor:
        return x_hat * self.weight + self.bias if self.affine else x_hat

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


@SEQUENCE_NORMS.register("none", aliases=("identity",))
class NoSequenceNorm(SequenceNorm):
    """No normalization: the values pass through (padded positions as 0)."""

    def __init__(self, num_features: int, **options):
        super().__init__(num_features, **(options | {"affine": False}))

    def normalize(self, x: torch.Tensor, m: torch.Tensor, t0: int) -> torch.Tensor:
        return x


def _moments(
    x: torch.Tensor, m: torch.Tensor, dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, population variance and count of the real values of x over `dims` (padding holds 0, m its 0/1)."""
    count = m.sum(dims)
    mean = x.sum(dims) / count.clamp(min=1)
    var = ((x - mean) * m).square().sum(dims) / count.clamp(min=1)
    return mean, var, count


@SEQUENCE_NORMS.register("batch", aliases=("bn", "batchnorm"))
class SequenceBatchNorm(SequenceNorm):
    """Batch norm with statistics shared over time: per channel over every real position (n, t) of the batch
    (Laurent et al. 2016's sequence-wise normalization); running statistics for eval."""

    batch_statistics = True
    whole_sequence = True  # its statistics span every step: never one step at a time

    def __init__(self, num_features: int, **options):
        super().__init__(num_features, **options)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, t: int | None = None) -> torch.Tensor:
        if t is not None:
            raise ValueError("batch norm with statistics shared over time takes the whole sequence, not one step")
        return super().forward(x, mask)

    def normalize(self, x: torch.Tensor, m: torch.Tensor, t0: int) -> torch.Tensor:
        if self.training:
            mean, var, count = _moments(x, m, (0, 1))
            if count[0] > 1:
                with torch.no_grad():
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    self.running_var.lerp_(var.detach() * count / (count - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return self.scale_shift((x - mean) * torch.rsqrt(var + self.eps))


@SEQUENCE_NORMS.register("batch_step", aliases=("bn_step", "recurrent_batch"))
class StepBatchNorm(SequenceNorm):
    """Batch norm with separate statistics per time step (Cooijmans et al. 2016, recurrent batch normalization):
    at step t, per channel over the real samples of step t; running statistics per step for eval, and for a step
    at or beyond `max_steps` (the training length) those of the last trained step. gamma starts at 0.1 (the paper's
    choice in recurrent networks: 1.0 saturates tanh and stops the gradient through time)."""

    batch_statistics = True
    default_gamma = 0.1

    def __init__(self, num_features: int, *, max_steps=1, **options):
        super().__init__(num_features, max_steps=max_steps, **options)
        self.max_steps = max_steps
        # Not named running_mean/running_var: these are (steps, C), not one statistic per channel.
        self.register_buffer("running_mean_t", torch.zeros(max_steps, num_features))
        self.register_buffer("running_var_t", torch.ones(max_steps, num_features))

    def normalize(self, x: torch.Tensor, m: torch.Tensor, t0: int) -> torch.Tensor:
        steps = x.shape[1]
        if self.training:
            mean, var, count = _moments(x, m, (0,))  # (T, C), (T, C), (T, 1)
            stored = min(steps, max(0, self.max_steps - t0))  # the steps that have running statistics
            if stored:
                update = count[:stored] > 1  # (stored, 1): an unbiased variance needs two real samples
                with torch.no_grad():
                    unbiased = var[:stored] * count[:stored] / (count[:stored] - 1).clamp(min=1)
                    for buf, new in ((self.running_mean_t, mean[:stored]), (self.running_var_t, unbiased)):
                        part = buf[t0 : t0 + stored]
                        part.copy_(torch.where(update, part.lerp(new.detach(), self.momentum), part))
        else:
            at = torch.arange(t0, t0 + steps, device=x.device).clamp(max=self.max_steps - 1)
            mean, var = self.running_mean_t[at], self.running_var_t[at]  # (T, C)
        return self.scale_shift((x - mean) * torch.rsqrt(var + self.eps))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_steps={self.max_steps}"


@SEQUENCE_NORMS.register("layer", aliases=("ln", "layernorm"))
class SequenceLayerNorm(SequenceNorm):
    """Layer norm (Ba et al. 2016): at each position over its C values."""

    def normalize(self, x: torch.Tensor, m: torch.Tensor, t0: int) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


@SEQUENCE_NORMS.register("rms", aliases=("rmsnorm",))
class SequenceRMSNorm(SequenceNorm):
    """RMS norm (Zhang & Sennrich 2019): at each position, divided by the root mean square of its C values; a gain,
    no bias and no centring."""

    def __init__(self, num_features: int, **options):
        super().__init__(num_features, **options)
        if self.bias is not None:
            self.bias = None

    def normalize(self, x: torch.Tensor, m: torch.Tensor, t0: int) -> torch.Tensor:
        y = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps)
        return y * self.weight if self.affine else y
