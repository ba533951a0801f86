"""Every normalization against an independent reference, in float64 with tight tolerances.

References: PyTorch's own layers and functionals where they exist (batch_norm, layer_norm, GroupNorm, rms_norm),
the textbook formula otherwise; the hand-written backward against autograd and gradcheck; switchable norm
against BN / LN / IN when its importance weights are one-hot.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normbench.config import experiment_from_dict
from normbench.nn.models import build_model
from normbench.nn.norms import NORMS, SwitchableNorm, _ManualBatchNormFn

TOL = dict(rtol=1e-10, atol=1e-10)
SHAPES = {"features": (16, 6), "maps": (4, 6, 5, 3)}


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def make(name: str, c: int = 6, **kw):
    norm = NORMS.get(name)(c, eps=1e-5, momentum=0.1, affine=True, groups=kw.pop("groups", 3), **kw)
    with torch.no_grad():  # non-trivial gamma/beta so that the affine part is checked too
        for p in (getattr(norm, "weight", None), getattr(norm, "bias", None)):
            if p is not None:
                p.copy_(torch.randn_like(p))
    return norm


def check_against(norm: nn.Module, reference, shape) -> None:
    """Forward output and the gradients of input, gamma and beta agree with `reference(x, gamma, beta)`."""
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    g = torch.randn(shape)
    y = norm(x)
    y_ref = reference(x, norm.weight, norm.bias)
    torch.testing.assert_close(y, y_ref, **TOL)
    grads = torch.autograd.grad((y * g).sum(), [x, norm.weight, norm.bias])
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [x, norm.weight, norm.bias])
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def channel(p, x):
    return p.view(1, -1, *([1] * (x.dim() - 2)))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_batch_matches_torch(shape):
    norm = make("batch").train()
    check_against(norm, lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5), shape)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_batch_manual_matches_torch_forward_backward_and_running_stats(shape):
    manual = make("batch_manual").train()
    check_against(manual, lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5), shape)
    manual = make("batch_manual").train()  # fresh running statistics
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1], eps=1e-5, momentum=0.1)
    for _ in range(3):
        x = torch.randn(shape) * 2 + 0.5
        manual(x), ref(x)
    torch.testing.assert_close(manual.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(manual.running_var, ref.running_var, **TOL)
    manual.eval(), ref.eval()
    with torch.no_grad():
        ref.weight.copy_(manual.weight), ref.bias.copy_(manual.bias)
    x = torch.randn(shape)
    torch.testing.assert_close(manual(x), ref(x), **TOL)


def test_batch_manual_backward_passes_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(10, 4, requires_grad=True)
    gamma = torch.randn(4, requires_grad=True)
    beta = torch.randn(4, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _ManualBatchNormFn.apply(*a, 1e-5)[0], (x, gamma, beta))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_layer_matches_torch_layer_norm(shape):
    def ref(x, w, b):  # PyTorch's elementwise affine, with the per-channel gamma/beta broadcast over H, W
        full = x.shape[1:]
        return F.layer_norm(x, full, channel(w, x)[0].expand(full), channel(b, x)[0].expand(full), eps=1e-5)

    check_against(make("layer"), ref, shape)


def test_instance_matches_torch_group_norm_with_one_channel_per_group():
    check_against(make("instance"), lambda x, w, b: F.group_norm(x, 6, w, b, eps=1e-5), SHAPES["maps"])


def test_instance_refuses_features():
    with pytest.raises(ValueError, match="no H, W"):
        make("instance")(torch.randn(8, 6))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_group_matches_the_formula(shape):
    def ref(x, w, b):  # Wu & He, eq. (1)-(3), written out
        n, _c = x.shape[:2]
        xg = x.reshape(n, 3, -1)
        mean, var = xg.mean(-1, keepdim=True), xg.var(-1, unbiased=False, keepdim=True)
        return ((xg - mean) / torch.sqrt(var + 1e-5)).reshape(x.shape) * channel(w, x) + channel(b, x)

    check_against(make("group", groups=3), ref, shape)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_rms_matches_torch_rms_norm(shape):
    def ref(x, w, b):
        full = x.shape[1:]
        return F.rms_norm(x, full, channel(w, x)[0].expand(full), eps=1e-5) + channel(b, x)

    check_against(make("rms"), ref, shape)


def one_hot(sn: SwitchableNorm, kind: str) -> SwitchableNorm:
    i = SwitchableNorm.KINDS.index(kind)
    with torch.no_grad():
        for p in (sn.mean_weight, sn.var_weight):
            p.fill_(-1e4)
            p[i] = 1e4
    return sn


@pytest.mark.parametrize(
    ("kind", "shape", "ref"),
    [
        ("bn", SHAPES["maps"], lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)),
        ("ln", SHAPES["maps"], lambda x, w, b: F.group_norm(x, 1, w, b, eps=1e-5)),
        ("in", SHAPES["maps"], lambda x, w, b: F.group_norm(x, 6, w, b, eps=1e-5)),
        ("bn", SHAPES["features"], lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)),
        ("ln", SHAPES["features"], lambda x, w, b: F.group_norm(x, 1, w, b, eps=1e-5)),
    ],
)
def test_switchable_reduces_to_bn_ln_in_when_one_hot(kind, shape, ref):
    check_against(one_hot(make("switchable"), kind).train(), ref, shape)


def test_switchable_importance_and_eval_and_gradcheck():
    sn = make("switchable")
    imp = sn.importance(spatial=True)
    assert sum(imp[f"mean_{k}"] for k in ("in", "ln", "bn")) == pytest.approx(1.0)
    assert sn.importance(spatial=False)["mean_in"] == 0.0
    # eval mode: the BN part uses the running statistics; one-hot BN then equals PyTorch's BN in eval mode
    one_hot(sn, "bn")
    ref = nn.BatchNorm2d(6, momentum=0.1)
    for _ in range(3):
        x = torch.randn(SHAPES["maps"]) + 2
        sn.train()(x), ref.train()(x)
    with torch.no_grad():
        ref.weight.copy_(sn.weight), ref.bias.copy_(sn.bias)
        ref.running_var.copy_(sn.running_var)  # SN keeps the population variance (its reference code does)
    torch.testing.assert_close(sn.running_mean, ref.running_mean, **TOL)
    x = torch.randn(SHAPES["maps"])
    torch.testing.assert_close(sn.eval()(x), ref.eval()(x), **TOL)
    mixed = make("switchable").train()
    x = torch.randn(3, 6, 4, 2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mixed(t), (x,))


def test_group_norm_must_divide():
    with pytest.raises(ValueError, match="groups"):
        make("group", c=6, groups=4)


def run_config(model: str, norm: str):
    raw = {
        "name": "t",
        "data": {"name": "digits" if model == "cnn" else "quadratic", "n": 64},
        "model": {"name": model, "norm": norm, "depth": 2, "width": 8, "channels": [4, 8], "norm_groups": 2},
    }
    return experiment_from_dict(raw).runs[0].config


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("norm", NORMS.names())
def test_every_norm_in_every_model_trains_a_step(model, norm):
    if model == "mlp" and norm == "instance":
        with pytest.raises(Exception, match="instance norm"):
            run_config(model, norm)
        return
    cfg = run_config(model, norm)
    shape, out = ((1, 8, 8), 10) if model == "cnn" else ((1,), 1)
    torch.manual_seed(0)
    net = build_model(cfg.model, shape, out).float().train()
    x = torch.randn(8, *shape, dtype=torch.float32)
    y = net(x)
    assert y.shape == (8, out) and torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.eval()(x).shape == (8, out)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_noisy_batch_is_batch_norm_then_its_steps_scale_and_shift(shape):
    noisy = make("noisy_batch", noise=(0.7, 2.0), key=(3, 1)).train()
    n = shape[0]
    for step in range(3):
        scale, shift = noisy.draws(step, n)
        assert scale.shape == shift.shape == (n, 6)

        def reference(x, w, b, s=scale, m=shift):
            per = (n, 6) + (1,) * (x.dim() - 2)
            return s.view(per) * F.batch_norm(x, None, None, w, b, training=True, eps=1e-5) + m.view(per)

        check_against(noisy, reference, shape)
        assert int(noisy.running_step) == step + 1  # one count per train-mode forward
    assert not torch.equal(noisy.draws(0, n)[0], noisy.draws(1, n)[0])  # redrawn every step
    assert torch.equal(noisy.draws(5, n)[1], make("noisy_batch", noise=(0.7, 2.0), key=(3, 1)).draws(5, n)[1])
    assert not torch.equal(noisy.draws(5, n)[1], make("noisy_batch", noise=(0.7, 2.0), key=(3, 2)).draws(5, n)[1])
    x = torch.randn(shape)
    running = noisy.running_mean, noisy.running_var
    expected = F.batch_norm(x, *running, noisy.weight, noisy.bias, training=False, eps=1e-5)
    torch.testing.assert_close(noisy.eval()(x), 1.5 * expected, **TOL)  # eval mode: BN and the mean scale, (1 + 2) / 2


def test_noisy_batch_draws_follow_santurkar_et_al():
    """Per step and channel a mean scale sigma ~ U(1, s) and a mean shift mu ~ U(-m, m) (the step's first draws, the
    same whatever the batch size); per sample a scale N(sigma, 0.1) and a shift U(mu - 0.1, mu + 0.1) (their
    appendix A, algorithm 1). Checked on 200,000 samples of one step, to within 6 standard errors."""
    m, s, n = 0.5, 1.25, 200_000
    noisy = make("noisy_batch", c=4, noise=(m, s), key=(7, 2))
    g = torch.Generator().manual_seed(((7 * 1_000_003 + 2) * 1_000_003 + 3) % 2**63)
    u = torch.rand(2, 4, generator=g, dtype=torch.float64)
    sigma, mu = 1 + (s - 1) * u[0], m * (2 * u[1] - 1)
    assert ((sigma >= 1) & (sigma <= s)).all() and (mu.abs() <= m).all()
    for batch in (n, 1):
        scale, shift = noisy.draws(3, batch)
        assert ((shift - mu).abs() <= 0.1).all()  # bounded: exact for any batch size
    scale, shift = noisy.draws(3, n)
    assert ((scale.mean(0) - sigma).abs() < 6 * 0.1 / n**0.5).all()
    assert ((scale.std(0) - 0.1).abs() < 6 * 0.1 / (2 * n) ** 0.5).all()
    assert ((shift.mean(0) - mu).abs() < 6 * 0.2 / 12**0.5 / n**0.5).all()
    # Uniform on a width of 0.2: std 0.2 / sqrt(12), the standard error of a sample std sigma sqrt((kurtosis - 1) / 4n)
    # with kurtosis 1.8.
    sd = 0.2 / 12**0.5
    assert ((shift.std(0) - sd).abs() < 6 * sd * (0.8 / (4 * n)) ** 0.5).all()


def test_noisy_batch_noise_follows_the_training_steps_not_the_measurements(tiny_raw):
    """The noise of step t is the same whatever is recorded in between (the measurements' forwards count no step),
    so a run recording every step trains bit for bit as one recording rarely; and a stack trains as its runs alone."""
    from normbench.engine import train_run, train_stack

    tiny_raw["model"] |= {"norm": "noisy_batch", "norm_noise": [1.0, 3.0], "normalize_input": True}
    tiny_raw["grid"] = {"model.activation": ["tanh"]}
    rarely = experiment_from_dict(tiny_raw).runs
    tiny_raw["record"] |= {"hist_every": 1, "loss_every": 1}
    often = experiment_from_dict(tiny_raw).runs
    a = train_stack([r.config for r in rarely])
    b = [train_run(r.config) for r in often]
    for ra, rb in zip(a, b, strict=True):
        ca, cb = ra.tables["curves"], rb.tables["curves"]
        assert ca.equals(cb[cb.step.isin(ca.step)].reset_index(drop=True))
    # The noise is felt: the same run with BN's plain output trains to other losses.
    tiny_raw["model"]["norm"] = "batch"
    c = train_run(experiment_from_dict(tiny_raw).runs[0].config).tables["curves"]
    assert c.loss.iloc[-1] != b[0].tables["curves"].loss.iloc[-1]
