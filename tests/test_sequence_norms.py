"""The sequence norms (nn/sequence_norms.py), each against an independent reference in float64: torch's own
functions applied to the real positions only, found by brute-force loops."""

import pytest
import torch
import torch.nn.functional as F

from normbench.registry import SEQUENCE_NORMS

N, T, C = 5, 7, 4
TOL = dict(rtol=1e-10, atol=1e-10)  # float64 against float64: rounding only


def padded(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, T, C) and a mask of lengths 7, 5, 3, 7, 2 (every step up to 4 has at least two real samples)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, T, C, generator=g, dtype=torch.float64) * 2 + 0.5
    lengths = torch.tensor([7, 5, 3, 7, 2])
    return x, torch.arange(T)[None, :] < lengths[:, None]


def make(name: str, **options) -> torch.nn.Module:
    norm = SEQUENCE_NORMS.get(name)(C, max_steps=T, **options).double()
    if norm.affine:
        with torch.no_grad():  # gamma and beta away from 1 and 0, so that they are tested too
            norm.weight.copy_(torch.linspace(0.5, 1.5, C))
            if norm.bias is not None:
                norm.bias.copy_(torch.linspace(-0.3, 0.3, C))
    return norm


def gamma_beta(norm) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return (norm.weight, norm.bias) if norm.affine else (None, None)


@pytest.mark.parametrize("name", SEQUENCE_NORMS.names())
def test_gradcheck_forward_and_backward(name):
    x, mask = padded()
    norm = make(name)
    x.requires_grad_(True)
    params = [p for p in norm.parameters()]
    assert torch.autograd.gradcheck(lambda x, *p: norm(x, mask), (x, *params))
    assert torch.autograd.gradgradcheck(lambda x, *p: norm(x, mask), (x, *params))


@pytest.mark.parametrize("name", SEQUENCE_NORMS.names())
def test_padding_changes_no_real_position(name):
    x, mask = padded()
    huge = x.masked_fill(~mask[..., None], 1e30)
    infinite = x.masked_fill(~mask[..., None], float("inf"))
    for mode in (True, False):
        outs = []
        for values in (x, huge, infinite):
            norm = make(name).train(mode)
            values = values.clone().requires_grad_(True)
            y = norm(values, mask)
            (y * torch.linspace(-1, 1, C, dtype=torch.float64)).sum().backward()
            outs.append((y[mask], values.grad[mask], [p.grad for p in norm.parameters()]))
        for y, g, pg in outs[1:]:
            assert torch.equal(y, outs[0][0]) and torch.equal(g, outs[0][1])
            assert all(torch.equal(a, b) for a, b in zip(pg, outs[0][2], strict=True))
        assert torch.isfinite(outs[2][0]).all()


def test_masked_batch_norm_against_batch_norm_on_the_unpadded_positions():
    """Shared over time: the real positions of every sequence concatenated into one batch of rows, normalized by
    F.batch_norm; running statistics likewise."""
    x, mask = padded()
    norm = make("batch", momentum=0.3)
    y = norm(x, mask)
    rows = torch.cat([x[n, : int(mask[n].sum())] for n in range(N)])  # (real positions, C)
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    ref = F.batch_norm(rows, rm, rv, *gamma_beta(norm), training=True, momentum=0.3, eps=norm.eps)
    torch.testing.assert_close(y[mask], ref, **TOL)
    assert (y[~mask] == 0).all()
    torch.testing.assert_close(norm.running_mean, rm, **TOL)
    torch.testing.assert_close(norm.running_var, rv, **TOL)
    norm.eval()  # eval: the running statistics
    ref = F.batch_norm(rows, rm, rv, *gamma_beta(norm), training=False, eps=norm.eps)
    torch.testing.assert_close(norm(x, mask)[mask], ref, **TOL)


def test_per_step_batch_norm_against_batch_norm_on_each_steps_real_rows():
    x, mask = padded()
    norm = make("batch_step", momentum=0.3)
    y = norm(x, mask)
    rm, rv = torch.zeros(T, C, dtype=torch.float64), torch.ones(T, C, dtype=torch.float64)
    for t in range(T):
        real = mask[:, t]
        if real.sum() < 2:  # F.batch_norm refuses one sample; no step of padded() has fewer than 2
            continue
        ref = F.batch_norm(x[real, t], rm[t], rv[t], *gamma_beta(norm), training=True, momentum=0.3, eps=norm.eps)
        torch.testing.assert_close(y[real, t], ref, **TOL)
    torch.testing.assert_close(norm.running_mean_t, rm, **TOL)
    torch.testing.assert_close(norm.running_var_t, rv, **TOL)
    # one step at a time (as a recurrence calls it) is the same
    again = make("batch_step", momentum=0.3)
    steps = torch.stack([again(x[:, t], mask[:, t], t=t) for t in range(T)], 1)
    torch.testing.assert_close(steps, y, **TOL)
    torch.testing.assert_close(again.running_mean_t, rm, **TOL)
    norm.eval()
    for t in range(T):
        ref = F.batch_norm(x[:, t], rm[t], rv[t], *gamma_beta(norm), training=False, eps=norm.eps)
        torch.testing.assert_close(norm(x, mask)[mask[:, t], t], ref[mask[:, t]], **TOL)


def test_per_step_batch_norm_beyond_the_trained_length_uses_the_last_steps_statistics():
    x, mask = padded()
    norm = make("batch_step")
    norm(x, mask)
    norm.eval()
    longer = torch.randn(N, 3 * T, C, dtype=torch.float64)
    y = norm(longer)
    last = F.batch_norm(
        longer[:, T:].reshape(-1, C), norm.running_mean_t[-1], norm.running_var_t[-1], *gamma_beta(norm), eps=norm.eps
    )
    torch.testing.assert_close(y[:, T:].reshape(-1, C), last, **TOL)
    torch.testing.assert_close(norm(longer[:, 2 * T], t=2 * T), y[:, 2 * T], **TOL)
    # in training, steps beyond the stored ones are normalized by their batch and leave the running ones alone
    norm.train()
    before = norm.running_mean_t.clone()
    norm(longer[:, T + 1], t=T + 1)
    assert torch.equal(norm.running_mean_t, before)


def test_batch_step_gamma_starts_at_a_tenth():
    assert torch.equal(SEQUENCE_NORMS.get("batch_step")(3).weight, torch.full((3,), 0.1))
    assert torch.equal(SEQUENCE_NORMS.get("batch_step")(3, gamma=1.0).weight, torch.ones(3))


@pytest.mark.parametrize("name", ["layer", "rms"])
def test_per_position_norms_against_torch(name):
    x, mask = padded()
    norm = make(name)
    if name == "layer":
        ref_mod = torch.nn.LayerNorm(C, eps=norm.eps).double()
        with torch.no_grad():
            ref_mod.weight.copy_(norm.weight)
            ref_mod.bias.copy_(norm.bias)
    else:
        ref_mod = torch.nn.RMSNorm(C, eps=norm.eps).double()
        with torch.no_grad():
            ref_mod.weight.copy_(norm.weight)
    y = norm(x, mask)
    for n in range(N):
        for t in range(T):
            if mask[n, t]:
                torch.testing.assert_close(y[n, t], ref_mod(x[n, t]), **TOL)
    torch.testing.assert_close(norm(x[:, 2], mask[:, 2], t=2), y[:, 2], **TOL)


def test_shared_batch_norm_refuses_one_step():
    with pytest.raises(ValueError, match="whole sequence"):
        make("batch")(torch.zeros(N, C, dtype=torch.float64), t=0)
