"""Measurements on hand-made tensors: histograms lose nothing, automatic ranges follow their rule, dead and saturated
units are what they say; the gradient points of both kernels against float64 autograd of the plain model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normbench.record import (
    GRAD_POINTS,
    POINTS,
    Shape,
    auto_ranges,
    histogram,
    histograms_stacked,
    point_shape,
    unit_metrics,
)


def test_histogram_counts_add_up_including_outside_and_nonfinite():
    v = torch.tensor([-5.0, -1.0, -0.5, 0.0, 0.99, 1.0, 1.5, float("nan"), float("inf"), -float("inf"), 3.0])
    h = histogram(v, -1.0, 1.0, 4)
    assert h.counts.sum() + h.below + h.above + h.nan + h.inf == h.n == 11
    assert (h.below, h.above, h.nan, h.inf) == (1, 2, 1, 2)
    assert h.counts.tolist() == [1, 1, 1, 2]  # [-1, -.5) [-.5, 0) [0, .5) [.5, 1]: the right edge 1.0 counts
    finite = np.array([-5.0, -1.0, -0.5, 0.0, 0.99, 1.0, 1.5, 3.0])
    assert h.mean == pytest.approx(finite.mean()) and h.std == pytest.approx(finite.std())
    assert (h.min, h.max) == (-5.0, 3.0)


def test_histogram_matches_numpy_inside_the_range():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(10_000, generator=g) * 2
    h = histogram(v, -3.0, 3.0, 15)
    expected, _ = np.histogram(v.double().numpy(), bins=15, range=(-3.0, 3.0))
    assert h.counts.tolist() == expected.tolist()
    assert h.below == int((v < -3).sum()) and h.above == int((v > 3).sum())


def test_histogram_of_all_nan_reports_it():
    h = histogram(torch.full((4, 3), float("nan")), 0.0, 1.0, 5)
    assert h.nan == 12 and h.counts.sum() == 0 and math.isnan(h.mean)


def test_dead_units_are_zero_for_every_sample():
    act = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # (N=4, C=3)
    m = unit_metrics(act, "relu", 0.99)
    assert m["dead_fraction"] == pytest.approx(1 / 3)  # only unit 0
    assert m["zero_fraction"] == pytest.approx(9 / 12)
    assert math.isnan(m["saturated_fraction"])  # ReLU has no saturated region


def test_saturation_of_tanh_and_sigmoid():
    t = torch.tensor([[0.995, -0.999], [0.5, -0.2]])
    assert unit_metrics(t, "tanh", 0.99)["saturated_fraction"] == pytest.approx(0.5)
    s = torch.tensor([[0.999, 0.001], [0.5, 0.9]])
    assert unit_metrics(s, "sigmoid", 0.99)["saturated_fraction"] == pytest.approx(0.5)
    assert unit_metrics(t, "tanh", 0.99)["dead_fraction"] == 0.0


def test_nonfinite_layer_is_neither_dead_nor_alive():
    act = torch.tensor([[0.0, float("nan")], [0.0, 1.0]])
    m = unit_metrics(act, "relu", 0.99)
    assert all(math.isnan(v) for v in m.values())


def test_stacked_histograms_equal_numpy_model_by_model():
    from normbench.record import histograms_stacked

    g = torch.Generator().manual_seed(3)
    v = torch.randn(5, 40, 7, generator=g) * 3
    v[0, 0, :3] = torch.tensor([2.0, -2.0, 2.0 - 4.0 / 9.0])  # on the range's ends and on an inner edge
    v[1, 0, 0], v[2, 3, 1], v[2, 3, 2], v[3] = float("nan"), float("inf"), -float("inf"), float("nan")
    for x, h in zip(v, histograms_stacked(v, -2.0, 2.0, 9), strict=True):
        a = x.double().flatten().numpy()
        fin = a[np.isfinite(a)]
        expected, _ = np.histogram(fin, bins=9, range=(-2.0, 2.0))
        assert h.counts.tolist() == expected.tolist()
        assert (h.below, h.above, h.n) == (int((fin < -2).sum()), int((fin > 2).sum()), a.size)
        assert (h.nan, h.inf) == (int(np.isnan(a).sum()), int(np.isinf(a).sum()))
        for name, want in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
            got = getattr(h, name)
            assert (fin.size == 0 and math.isnan(got)) or got == pytest.approx(float(want(fin)), rel=1e-12), name


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
def test_stacked_unit_metrics_model_by_model(activation):
    from normbench.record import unit_metrics_stacked
    from normbench.registry import ACTIVATIONS

    g = torch.Generator().manual_seed(4)
    act = torch.randn(4, 6, 50, generator=g).clamp_min(0) if activation == "relu" else torch.randn(4, 6, 50).tanh()
    act[1, 2] = 0.0  # a dead unit
    act[2, 0, 3] = float("nan")  # a diverged model
    rule = ACTIVATIONS.get(activation).saturated
    for s, a in zip(unit_metrics_stacked(act, activation, 0.9), act, strict=True):
        x = a.double().numpy()  # (C, N)
        if not np.isfinite(x).all():
            assert all(math.isnan(v) for v in s.values())
            continue
        assert s["dead_fraction"] == pytest.approx((x == 0).all(axis=1).mean(), rel=1e-12)
        assert s["zero_fraction"] == pytest.approx((x == 0).mean(), rel=1e-12)
        sat = rule(torch.from_numpy(x), 0.9).numpy().mean() if rule else float("nan")
        assert (math.isnan(s["saturated_fraction"]) and math.isnan(sat)) or s["saturated_fraction"] == pytest.approx(
            sat, rel=1e-12
        )


def test_conv_unit_is_a_channel_over_every_position():
    act = torch.zeros(3, 2, 4, 4)  # (N, C, H, W)
    act[:, 1, 0, 0] = 1.0  # channel 1 fires at one position of every sample; channel 0 never does
    m = unit_metrics(act, "relu", 0.99)
    assert m["dead_fraction"] == 0.5 and m["zero_fraction"] == pytest.approx(93 / 96)


# ---------------------------------------------------------------------------------------------------------------
# Automatic ranges: the rule of record.auto_ranges, restated with numpy.quantile


def numpy_range(x: np.ndarray, shape) -> tuple[float, float]:
    """The documented rule (docs/results-format.md, 'Automatic ranges') on numpy's quantiles."""
    f = x[np.isfinite(x)]
    if shape.lower is not None and shape.upper is not None:
        return shape.lower, shape.upper
    if f.size:
        lo, hi = quantile_range(f, shape)
        if not lo < hi:  # the extreme values instead
            lo, hi = quantile_range(f, shape, extreme=True)
        if lo < hi:  # rounded outward to three significant digits of the width
            step = 10.0 ** (np.floor(np.log10(hi - lo)) - 2)
            if shape.lower is None:
                lo = np.floor(lo / step) * step
            if shape.upper is None:
                hi = np.ceil(hi / step) * step
            return float(lo), float(hi)
    v = f[0] if f.size else 0.0
    if shape.lower is not None:
        return shape.lower, shape.lower + 1.0
    if shape.upper is not None:
        return shape.upper - 1.0, shape.upper
    return (-1.0, 1.0) if v == 0 or shape.centred else (v - abs(v), v + abs(v))


def quantile_range(f: np.ndarray, shape, extreme: bool = False) -> tuple[float, float]:
    """The range of `shape` that leaves out 1% of the finite values f, or none of them (extreme)."""
    q = (lambda a, p: a.min() if p < 0.5 else a.max()) if extreme else np.quantile
    if shape.centred:
        return -q(np.abs(f), 0.99), q(np.abs(f), 0.99)
    if shape.lower is not None:
        return shape.lower, q(f, 0.99)
    if shape.upper is not None:
        return q(f, 0.01), shape.upper
    return q(f, 0.005), q(f, 0.995)


SHAPES = {
    "free": Shape(),
    "centred": Shape(centred=True),
    "relu": Shape(0.0, None),
    "elu": Shape(-1.0, None),
    "bounded above": Shape(None, 2.0),
    "tanh": Shape(-1.0, 1.0),
    "sigmoid": Shape(0.0, 1.0),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("n", [1, 2, 3, 7, 200, 1001, 15000])
def test_auto_ranges_follow_numpy_quantiles(shape, n):
    g = torch.Generator().manual_seed(n)
    rows = [
        torch.randn(n, generator=g) * 3 + 1,
        torch.empty(n).exponential_(generator=g) * 1e-5,  # a gradient's scale
        torch.randn(n, generator=g).clamp_min(0) * 40,  # ReLU outputs, half 0
        torch.randn(n, generator=g) / torch.randn(n, generator=g).abs().clamp_min(1e-3),  # heavy tails (Cauchy)
    ]
    if shape.lower is not None:
        rows = [r.abs() + shape.lower for r in rows]
    if shape.upper is not None:
        rows = [shape.upper - r.abs() for r in rows]
    values = torch.stack(rows)
    if n >= 7:
        values[3, 2], values[3, 5] = float("nan"), -float("inf")  # ranged over the finite values only
    lows, highs = auto_ranges(values, shape)
    for x, lo, hi in zip(values.double().numpy(), lows, highs, strict=True):
        want_lo, want_hi = numpy_range(x, shape)
        assert lo == pytest.approx(want_lo, rel=1e-12, abs=1e-300) and hi == pytest.approx(want_hi, rel=1e-12)
        f = x[np.isfinite(x)]
        if shape.lower is not None and shape.upper is not None:
            assert (lo, hi) == (shape.lower, shape.upper)
        elif f.size and np.ptp(f) > 0:  # at most 1% of the values outside; at most 2% wider than the quantiles
            assert ((f < lo) | (f > hi)).sum() <= 0.01 * f.size + 2
            q_lo, q_hi = quantile_range(f, shape)
            assert q_lo >= lo and q_hi <= hi and (q_lo == q_hi or hi - lo <= 1.02 * (q_hi - q_lo))
        h = histograms_stacked(torch.from_numpy(x)[None], [lo], [hi], 10)[0]
        assert h.counts.sum() + h.below + h.above + h.nan + h.inf == h.n == n


def test_auto_ranges_are_robust_to_an_outlier():
    v = torch.randn(1, 10_000, generator=torch.Generator().manual_seed(0))
    v[0, 0] = 1e6
    (lo,), (hi,) = auto_ranges(v)
    assert -3.5 < lo < -2 and 2 < hi < 3.5  # min and max would make it [-4, 1e6]: every other value in one bin
    assert histogram(v, lo, hi, 30).above >= 1


DEGENERATE = [
    # what, values, shape, expected range
    ("dead ReLU layer: all 0", torch.zeros(3000), Shape(0.0, None), (0.0, 1.0)),
    ("zero gradients of a dead layer", torch.zeros(3000), Shape(centred=True), (-1.0, 1.0)),
    ("all equal", torch.full((50,), 3.0), Shape(), (0.0, 6.0)),
    ("all equal, negative", torch.full((50,), -2.0), Shape(), (-4.0, 0.0)),
    ("all 0, free", torch.zeros(50), Shape(), (-1.0, 1.0)),
    ("a single value", torch.tensor([5.0]), Shape(), (0.0, 10.0)),
    ("a single value, centred", torch.tensor([5.0]), Shape(centred=True), (-5.0, 5.0)),
    ("a single value on the bound", torch.tensor([0.0]), Shape(0.0, None), (0.0, 1.0)),
    ("diverged: all NaN", torch.full((40,), float("nan")), Shape(), (-1.0, 1.0)),
    ("diverged: NaN and inf", torch.tensor([float("nan"), float("inf"), -float("inf")] * 9), Shape(0.0, None), (0, 1)),
    ("diverged tanh layer", torch.full((40,), float("nan")), Shape(-1.0, 1.0), (-1.0, 1.0)),
    (
        "nearly dead: 0.3% positive",
        torch.cat([torch.zeros(997), torch.tensor([0.5, 2.0, 7.25])]),
        Shape(0.0, None),
        (0.0, 7.25),
    ),
]


@pytest.mark.parametrize(("values", "shape", "expected"), [d[1:] for d in DEGENERATE], ids=[d[0] for d in DEGENERATE])
def test_auto_ranges_of_degenerate_values(values, shape, expected):
    stacked = torch.stack([values, values * 0 + float("nan"), values])  # and in a stack beside a diverged model
    lows, highs = auto_ranges(stacked, shape)
    assert (lows[0], highs[0]) == (lows[2], highs[2]) == pytest.approx(expected, rel=1e-12)
    assert (lows[0], highs[0]) == pytest.approx(numpy_range(values.double().numpy(), shape), rel=1e-12)
    assert lows[1] < highs[1] and math.isfinite(lows[1]) and math.isfinite(highs[1])
    for h in histograms_stacked(stacked, lows, highs, 8):
        assert h.counts.sum() + h.below + h.above + h.nan + h.inf == h.n == values.numel()
    h = histograms_stacked(values[None], lows[:1], highs[:1], 8)[0]
    finite = values[torch.isfinite(values)]
    assert h.below == int((finite < lows[0]).sum()) and h.above == int((finite > highs[0]).sum())
    if finite.numel() and (finite == finite[0]).all():  # every value in one bin
        assert sorted(h.counts.tolist())[-1] == finite.numel()


def test_histograms_of_huge_values_beside_nan_and_inf():
    """A diverging layer: finite values near float32's limit (an automatic range as wide), NaN and inf."""
    v = torch.tensor([1e30, -2e35, 3e37, 5.0, -3e38, float("nan"), float("inf"), -float("inf")] * 20)
    for shape in (Shape(), Shape(centred=True), Shape(0.0, None)):
        (lo,), (hi,) = auto_ranges(v[None], shape)
        h = histogram(v, lo, hi, 10)
        a = v.double().numpy()
        fin = a[np.isfinite(a)]
        expected, _ = np.histogram(fin[(fin >= lo) & (fin <= hi)], bins=10, range=(lo, hi))
        assert h.counts.tolist() == expected.tolist(), shape
        assert (h.below, h.above, h.nan, h.inf) == (int((fin < lo).sum()), int((fin > hi).sum()), 20, 40)


def test_ranges_per_model_and_zero_of_a_centred_range():
    g = torch.Generator().manual_seed(5)
    v = torch.randn(3, 500, generator=g) * torch.tensor([[1.0], [1e-6], [50.0]])
    v[:, :40] = 0.0  # exact zeros: on the inner edge 0 of a centred range with an even bin count
    lows, highs = [-3.0, -2e-6, -170.0], [3.0, 2e-6, 170.0]
    for x, lo, hi, h in zip(v, lows, highs, histograms_stacked(v, lows, highs, 12), strict=True):
        a = x.double().numpy()
        nonzero, _ = np.histogram(a[a != 0], bins=12, range=(lo, hi))
        nonzero[6] += 40  # numpy's bin [0, step) for 0 too, whatever the rounding of its edges
        assert h.counts.tolist() == nonzero.tolist() and (h.lo, h.hi) == (lo, hi)
        assert (h.below, h.above) == (int((a < lo).sum()), int((a > hi).sum()))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"norm": "none", "activation": "relu"}, {0: "fff", 1: "ffr"}),
        ({"norm": "batch", "activation": "relu"}, {0: "fff", 1: "fcr"}),
        ({"norm": "batch", "activation": "relu", "normalize_input": True}, {0: "fcc", 1: "fcr"}),
        ({"norm": "batch", "activation": "tanh"}, {1: "fct"}),
        ({"norm": "layer", "activation": "sigmoid"}, {1: "fcs"}),
        ({"norm": "batch", "activation": "identity"}, {1: "fcc"}),  # odd: a centred input stays centred
        ({"norm": "none", "activation": "identity"}, {1: "fff"}),
        ({"norm": "batch", "activation": "leaky_relu"}, {1: "fcf"}),
        ({"norm": "batch", "activation": "elu"}, {1: "fce"}),
        ({"norm": "batch", "activation": "relu", "placement": "after"}, {1: "rcr"}),  # pre_norm: the act's output
        ({"norm": "none", "activation": "tanh", "placement": "after"}, {1: "ttt"}),
    ],
)
def test_point_shapes(model, expected):
    from normbench.config import ModelConfig

    letters = {"f": Shape(), "c": Shape(centred=True), "r": Shape(0.0, None), "t": Shape(-1.0, 1.0)}
    letters |= {"s": Shape(0.0, 1.0), "e": Shape(-1.0, None)}
    mc = ModelConfig(**model)
    for layer, kinds in expected.items():
        for point, kind in zip(POINTS, kinds, strict=True):
            assert point_shape(mc, layer, point) == letters[kind], (layer, point)
        for point in GRAD_POINTS:
            assert point_shape(mc, max(layer, 1), point) == Shape(centred=True)


def test_ranges_config_auto_or_a_pair():
    from pydantic import ValidationError

    from normbench.config import RecordConfig

    rc = RecordConfig()
    assert all(getattr(rc.ranges, p) == "auto" for p in ("input", *POINTS, *GRAD_POINTS))
    rc = RecordConfig(ranges={"post_act": [-1, 3], "grad_weight": "auto"})
    assert rc.ranges.post_act == (-1.0, 3.0) and rc.ranges.pre_norm == "auto"
    for bad in ("automatic", [2, 1], [0]):
        with pytest.raises(ValidationError):
            RecordConfig(ranges={"post_act": bad})


# ---------------------------------------------------------------------------------------------------------------
# Gradient points of both kernels against float64 autograd of a plain PyTorch model

ULP32 = 2.0**-23


def plain_gradients(cfg, data, x, y, mode):
    """d(loss)/d(pre_norm) (N, C, ...) and d(loss)/d(W) of every hidden layer: the run's model built as every kernel
    starts it, run block by block here with its pre_norm tensor's gradient retained, and loss.backward()."""
    import torch.nn.functional as F

    from normbench.nn.models import build_model, recorded_layers

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.out_features).double()
    model.train(mode == "train")
    blocks = recorded_layers(model)
    h, pre = blocks[0](x), {}
    for i, block in enumerate(blocks[1:], start=1):
        z = block.fc(h)
        pre[i] = z if block.norm_first else block.act(z)
        pre[i].retain_grad()
        h = block.pool(block.act(block.norm(pre[i])) if block.norm_first else block.norm(pre[i]))
    out = model.head(h.flatten(1))
    loss = F.cross_entropy(out, y) if data.task == "classification" else (out - y).square().sum(1).mean()
    loss.backward()
    return {i: (pre[i].grad, blocks[i].fc.weight.grad) for i in pre}


GRADIENT_CASES = [
    # data, model, kernels
    ({"name": "quadratic", "n": 48}, {"depth": 3, "width": 8, "norm": "none", "activation": "tanh"}, "both"),
    ({"name": "quadratic", "n": 48}, {"depth": 3, "width": 8, "norm": "none", "activation": "relu"}, "both"),
    ({"name": "quadratic", "n": 48}, {"depth": 3, "width": 8, "norm": "batch", "activation": "relu"}, "both"),
    ({"name": "quadratic", "n": 48}, {"depth": 2, "width": 6, "norm": "batch", "placement": "after"}, "both"),
    ({"name": "digits", "n": 60}, {"depth": 2, "width": 16, "norm": "batch", "activation": "relu"}, "both"),
    ({"name": "digits", "n": 40}, {"name": "cnn", "channels": [4, 6], "norm": "none"}, "autograd"),
    ({"name": "digits", "n": 40}, {"name": "cnn", "channels": [4, 6], "norm": "batch"}, "autograd"),
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize(("data", "model", "kernels"), GRADIENT_CASES)
def test_gradient_points_equal_float64_autograd_of_the_plain_model(data, model, kernels, mode):
    """Both gradient points and both norms of every hidden layer, as the recorder writes them (a stack of two
    runs), against the plain model's float64 gradients: values to one float32 ulp, histograms the same."""
    from normbench.config import RunConfig
    from normbench.data import build_dataset
    from normbench.engine.driver import Training

    base = {"data": data, "model": {"weight_init": {"name": "normal", "std": 0.5}, "bias_init": 0.1, **model}}
    base["record"] = {"bins": 12, "eval_mode": mode}
    cfgs = [RunConfig.model_validate({**base, "seed": s}) for s in (1, 2)]
    dataset = build_dataset(cfgs[0].data)
    x = dataset.x_train.double()
    y = dataset.y_train.double() if dataset.task == "regression" else dataset.y_train
    expected = [plain_gradients(c, dataset, x, y, mode) for c in cfgs]
    for kernel in ("written-out", "autograd") if kernels == "both" else (kernels,):
        training = Training(cfgs, kernel, False, torch.device("cpu"), torch.float64)
        k = training.kernel
        probe = k.probe(*training.splits["train"], mode)
        training.rec.layers(0, [0, 1])
        for j, want in enumerate(expected):
            tables = training.rec.tables(j)
            hists, layers = tables["histograms"].set_index(["layer", "point"]), tables["layers"].set_index("layer")
            assert not any(p.startswith("grad") for p in hists.loc[0].index)  # the input has no gradient points
            for i, (d_pre, d_w) in want.items():
                ref_pre = d_pre.movedim(1, 0).reshape(d_pre.shape[1], -1)  # channels by values, as a Probe
                ref_w = d_w.reshape(-1)
                got_pre, got_w = probe.points[(i, "grad_pre_norm")][j], probe.grad[j, k.layer_weights[i]]
                for got, ref in ((got_pre, ref_pre), (got_w, ref_w)):
                    torch.testing.assert_close(got, ref, rtol=ULP32, atol=ULP32 * ref.abs().max().item())
                for col, ref in (("backprop_norm", ref_pre), ("grad_norm", ref_w)):
                    assert layers.loc[i, col] == pytest.approx(ref.norm().item(), rel=ULP32), (kernel, i, col)
                for point, ref in (("grad_pre_norm", ref_pre), ("grad_weight", ref_w)):
                    row = hists.loc[(i, point)]
                    lo, hi = numpy_range(ref.numpy().ravel(), Shape(centred=True))
                    assert (row.lo, row.hi) == pytest.approx((lo, hi), rel=ULP32), (kernel, i, point)
                    h = histogram(ref, row.lo, row.hi, 12)
                    assert row.counts.tolist() == h.counts.tolist(), (kernel, i, point)
                    assert (row.below, row.above, row.n) == (h.below, h.above, ref.numel())
