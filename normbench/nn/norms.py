"""Normalization layers, chosen by name.

Every constructor takes the feature (channel) count first and the same keyword options, so layers swap freely:

    norm = NORMS.get("group")(32, eps=1e-5, momentum=0.1, affine=True, groups=8)   # (N, 32, H, W) -> same

Which axes each one normalizes over (Wu & He, "Group Normalization", 2018, fig. 2), for MLP features (N, C) and
conv maps (N, C, H, W):

| name         | (N, C, H, W): statistics over            | (N, C)                     | running stats (eval) |
|--------------|------------------------------------------|----------------------------|----------------------|
| none         | -                                        | -                          | -                    |
| batch        | N, H, W per channel                      | N per feature              | yes                  |
| batch_manual | as batch; backward written by hand       | as batch                   | yes                  |
| noisy_batch  | as batch, then a random scale and shift per channel, redrawn every step | as batch | yes (mean noise) |
| layer        | C, H, W per sample                       | C per sample               | no                   |
| instance     | H, W per sample and channel              | refused: no H, W to use    | no                   |
| group        | (C/G), H, W per sample and group         | C/G per sample and group   | no                   |
| rms          | C, H, W per sample, no centring          | C per sample               | no                   |
| switchable   | softmax-weighted mix of IN, LN, BN stats | mix of LN and BN stats     | yes (the BN part)    |

Variances are population variances (divide by the count) for normalizing; running variances of batch and
batch_manual are unbiased, as PyTorch's (switchable keeps the population one, as its reference code). Every
affine transform is per channel: gamma, beta of shape (C,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normbench.registry import NORMS


def _per_channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) to broadcast over x (N, C, *)."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


class _Affine(nn.Module):
    """Shared constructor signature and per-channel gamma/beta."""

    def __init__(self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, groups=1):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def scale_shift(self, x_hat: torch.Tensor) -> torch.Tensor:
        if not self.affine:
            return x_hat
        return x_hat * _per_channel(self.weight, x_hat) + _per_channel(self.bias, x_hat)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


@NORMS.register("none", aliases=("identity",))
class NoNorm(nn.Identity):
    """No normalization: the values pass through unchanged."""

    def __init__(self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, groups=1):
        super().__init__()


@NORMS.register("batch", aliases=("bn", "batchnorm"))
class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm (Ioffe & Szegedy 2015): per channel over the batch (and H, W); running statistics for eval."""

    batch_statistics = True  # needs more than one sample per batch (checked at load)

    def __init__(self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, groups=1):
        # momentum is PyTorch's: running = (1 - momentum) * running + momentum * batch. TF's EMA decay d is 1 - d.
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"batch norm expects (N, C, ...) input, got shape {tuple(x.shape)}")


def step_generator(key: tuple[int, int], step: int, stream: int = 0) -> torch.Generator:
    """The generator of training step `step`'s random draws for the module `key` = (run's seed, layer): noisy batch
    norm's noise (stream 0) and dropout's masks (their own stream), the same whatever else is drawn or measured."""
    seed, layer = key
    return torch.Generator().manual_seed((((seed * 1_000_003 + layer) * 1_000_003 + step) % 2**63) ^ stream)


@NORMS.register("noisy_batch", aliases=("noisy_bn",))
class NoisyBatchNorm(BatchNorm):
    """Batch norm, then noise redrawn every training step (Santurkar et al. 2018's "noisy BN"; model.norm_noise).

    Santurkar et al. (2018, sec. 2.1 and appendix A, algorithm 1): at step t each channel c draws a mean shift
    mu_c ~ U(-m, m) and a mean
    scale sigma_c ~ U(1, s) (model.norm_noise = [m, s]; the paper's 0.5 and 1.25 by default); each sample i then
    draws its own scale s_ic ~ N(sigma_c, 0.1) and shift m_ic ~ U(mu_c - 0.1, mu_c + 0.1) (the paper's spread 0.1,
    SAMPLE_SPREAD), and y_ic = s_ic * BN(x)_ic + m_ic (one draw per sample and channel of a conv map, shared by its
    positions). Eval mode applies the noise's expectation, y = (1 + s) / 2 * BN(x), as dropout rescales at test time.
    Every unit's distribution moves at every step, by design: if batch norm helped by keeping the layers' input
    distributions stable, this norm would train worse than BN. An input norm (model.normalize_input) of a noisy_batch
    model is plain batch norm: the noise goes after the hidden layers' norms, as in the paper, not onto the data.

    The draws of step t depend on the run's seed, the layer, t and the batch size alone (`key` and the buffer
    running_step, which counts training steps and is held back and restored by the kernels with the running
    statistics; a float, exact up to 2^24 steps in float32), so a measurement's forward on the step's batch sees
    the step's very noise, and moves nothing."""

    noisy = True  # takes `noise` and `key` (models.py)
    SAMPLE_SPREAD = 0.1

    def __init__(
        self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, groups=1, noise=(0.5, 1.25), key=(0, 0)
    ):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.noise, self.key = tuple(noise), tuple(key)
        self.register_buffer("running_step", torch.zeros(()))

    def draws(self, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (scale, shift) of every sample and channel at training step `step` for a batch of n, each (n, C) in
        float64; the channels' means (the first draws) do not depend on n."""
        g = step_generator(self.key, step)
        u = torch.rand(2, self.num_features, generator=g, dtype=torch.float64)
        m, s = self.noise
        sigma, mu = 1 + (s - 1) * u[0], m * (2 * u[1] - 1)
        spread = self.SAMPLE_SPREAD
        scale = sigma + spread * torch.randn(n, self.num_features, generator=g, dtype=torch.float64)
        shift = mu + spread * (2 * torch.rand(n, self.num_features, generator=g, dtype=torch.float64) - 1)
        return scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if not self.training:
            return y * ((1 + self.noise[1]) / 2)
        scale, shift = (
            _per_sample_channel(t.to(x.device, x.dtype), y) for t in self.draws(int(self.running_step), len(x))
        )
        with torch.no_grad():
            self.running_step += 1
        return y * scale + shift


def _per_sample_channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, C, 1, ...) to broadcast over x (N, C, *)."""
    return p.view(*p.shape, *([1] * (x.dim() - 2)))


@NORMS.register("layer", aliases=("ln", "layernorm"))
class LayerNorm(_Affine):
    """Layer norm (Ba et al. 2016): per sample over all channels (and H, W), per-channel gamma/beta."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_shift(F.layer_norm(x, x.shape[1:], eps=self.eps))


@NORMS.register("instance", aliases=("in", "instancenorm"))
class InstanceNorm(_Affine):
    """Instance norm (Ulyanov et al. 2016): per sample and channel over H, W; conv maps only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(
                "instance norm normalizes each channel over H, W; features (N, C) have no H, W (each value would "
                "become 0): use a cnn model, or layer/group norm"
            )
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


@NORMS.register("group", aliases=("gn", "groupnorm"))
class GroupNorm(_Affine):
    """Group norm (Wu & He 2018): per sample over groups of C/G channels (and H, W); model.norm_groups = G."""

    def __init__(self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, groups=1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        if num_features % groups:
            raise ValueError(f"group norm: {num_features} channels do not split into {groups} groups")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


@NORMS.register("rms", aliases=("rmsnorm",))
class RMSNorm(_Affine):
    """RMS norm (Zhang & Sennrich 2019): per sample, divide by the root mean square over C (and H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        return self.scale_shift(x * torch.rsqrt(x.square().mean(dim=dims, keepdim=True) + self.eps))


class _RunningStats(_Affine):
    """Running mean/var buffers, updated in train mode, used in eval mode (as PyTorch's BN names them)."""

    batch_statistics = True  # its statistics (or part of them) are over the batch

    def __init__(self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, groups=1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def update_running(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach().reshape(-1), self.momentum)
            self.running_var.lerp_(var.detach().reshape(-1), self.momentum)


@NORMS.register("switchable", aliases=("sn", "switchablenorm"))
class SwitchableNorm(_RunningStats):
    """Switchable norm (Luo et al. 2018): learned softmax weights over IN, LN and BN statistics, separately for
    the mean and the variance. On (N, C) features IN is left out (no H, W) and the weights are over LN and BN."""

    KINDS = ("in", "ln", "bn")

    def __init__(self, num_features: int, *, eps=1e-5, momentum=0.1, affine=True, groups=1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.mean_weight = nn.Parameter(torch.ones(3))  # raw logits; importance() gives the softmax
        self.var_weight = nn.Parameter(torch.ones(3))
        self.last_spatial = True  # whether the last input had H, W (IN statistics in play)

    def _softmax(self, logits: torch.Tensor, spatial: bool) -> torch.Tensor:
        if spatial:
            return logits.softmax(0)
        mask = torch.tensor([float("-inf"), 0.0, 0.0], dtype=logits.dtype, device=logits.device)
        return (logits + mask).softmax(0)

    def importance(self, spatial: bool | None = None) -> dict[str, float]:
        """Readable importance weights (after the softmax): {'mean_in': .., 'mean_ln': .., ..., 'var_bn': ..}."""
        spatial = self.last_spatial if spatial is None else spatial
        with torch.no_grad():
            m, v = self._softmax(self.mean_weight, spatial), self._softmax(self.var_weight, spatial)
        return {f"{what}_{k}": float(w[i]) for what, w in (("mean", m), ("var", v)) for i, k in enumerate(self.KINDS)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        spatial = x.dim() > 2
        self.last_spatial = spatial
        xs = x.reshape(n, c, -1)  # (N, C, L), L = H*W (1 for features)
        mean_in = xs.mean(-1, keepdim=True)  # (N, C, 1)
        var_in = xs.var(-1, unbiased=False, keepdim=True)
        second = var_in + mean_in.square()
        mean_ln = mean_in.mean(1, keepdim=True)  # (N, 1, 1)
        var_ln = second.mean(1, keepdim=True) - mean_ln.square()
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)  # (1, C, 1)
            var_bn = second.mean(0, keepdim=True) - mean_bn.square()
            self.update_running(mean_bn, var_bn)
        else:
            mean_bn = self.running_mean.view(1, c, 1)
            var_bn = self.running_var.view(1, c, 1)
        wm, wv = self._softmax(self.mean_weight, spatial), self._softmax(self.var_weight, spatial)
        if not spatial:  # IN statistics of a single value are the value itself: leave them out entirely
            mean = wm[1] * mean_ln + wm[2] * mean_bn
            var = wv[1] * var_ln + wv[2] * var_bn
        else:
            mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
            var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        x_hat = (xs - mean) * torch.rsqrt(var + self.eps)
        return self.scale_shift(x_hat.reshape(x.shape))


class _ManualBatchNormFn(torch.autograd.Function):
    """Batch norm over the rows of x (M, C) with the backward pass written out, cs231n style:
    dx = (1 / M) * inv_std * (M * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat)),  dx_hat = dy * gamma."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        mean = x.mean(0)
        var = x.var(0, unbiased=False)
        inv_std = torch.rsqrt(var + eps)
        x_hat = (x - mean) * inv_std
        ctx.save_for_backward(x_hat, inv_std, gamma)
        return x_hat * gamma + beta, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x_hat, inv_std, gamma = ctx.saved_tensors
        m = dy.shape[0]
        dx_hat = dy * gamma
        dx = inv_std / m * (m * dx_hat - dx_hat.sum(0) - x_hat * (dx_hat * x_hat).sum(0))
        dgamma = (dy * x_hat).sum(0) if ctx.needs_input_grad[1] else None
        dbeta = dy.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dgamma, dbeta, None


@NORMS.register("batch_manual", aliases=("bn_manual",))
class ManualBatchNorm(_RunningStats):
    """Batch norm with a hand-written backward (torch.autograd.Function), for teaching and as a cross-check."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if not self.training:
            x_hat = (x - _per_channel(self.running_mean, x)) * torch.rsqrt(_per_channel(self.running_var, x) + self.eps)
            return self.scale_shift(x_hat)
        rows = x.movedim(1, -1).reshape(-1, c)  # (N*H*W, C): every position of every sample is a row
        gamma = self.weight if self.affine else torch.ones(c, dtype=x.dtype, device=x.device)
        beta = self.bias if self.affine else torch.zeros(c, dtype=x.dtype, device=x.device)
        y, mean, var = _ManualBatchNormFn.apply(rows, gamma, beta, self.eps)
        m = rows.shape[0]
        self.update_running(mean, var * m / max(m - 1, 1))  # unbiased, as PyTorch's BN
        return y.reshape(*x.movedim(1, -1).shape).movedim(-1, 1)
