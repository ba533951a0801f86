"""Measurements on hand-made tensors: histograms lose nothing, dead and saturated units are what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normbench.record import histogram, unit_metrics


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
