"""A sequence model recorded over time (record.time, time.parquet): the per-step percentiles, saturated and dead
shares against a brute-force loop over t and the real sequences in numpy; dL/dh_t against a float64 autograd
recurrence written here; the time table through `normbench run` and open_results, which leaves every other table as
it was; the mlp's run ids and tables untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from normbench.api import open_results, run
from normbench.config import RunConfig, experiment_from_dict
from normbench.data import pack_sequences
from normbench.engine.autograd import AutogradKernel
from normbench.nn.models import build_model
from normbench.points import TIME_PERCENTILES
from normbench.record import time_grad_norms, time_percentiles, time_unit_metrics
from normbench.views import figures, over_time
from normbench.views.data import ExperimentData, read_experiment
from normbench.views.style import compared_variants, first_seed, run_label, variant_label

M, N, T, C = 2, 5, 7, 4
LENGTHS = [[7, 3, 5, 1, 6], [2, 7, 7, 4, 3]]  # each model's sequences (their masks may differ)


def masked_values(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(M, N, T, C, generator=g).tanh() * 1.01  # some |a| > 0.99: saturated
    values[0, :, 2, 1] = 0.0  # unit 1 dead at t = 2 in model 0
    values[1, :, 4, :2] = 0.0
    mask = torch.arange(T)[None, None] < torch.tensor(LENGTHS)[..., None]
    values = torch.where(mask[..., None], values, 1e6)  # padding must never count
    return values, mask


def test_percentiles_and_unit_shares_per_step_against_a_loop_over_t():
    values, mask = masked_values()
    q, n = time_percentiles(values, mask)
    sat, dead = time_unit_metrics(values, mask, "tanh", 0.99)
    v, real = values.double().numpy(), mask.numpy()
    for j in range(M):
        for t in range(T):
            rows = [v[j, s, t] for s in range(N) if real[j, s, t]]  # the real sequences at t, each (C,)
            assert n[j, t] == len(rows)
            if not rows:
                assert np.isnan(q[j, t]).all() and np.isnan(sat[j, t]) and np.isnan(dead[j, t])
                continue
            a = np.stack(rows)
            np.testing.assert_allclose(q[j, t].numpy(), np.percentile(a, TIME_PERCENTILES), rtol=1e-12, atol=1e-12)
            assert sat[j, t] == pytest.approx(np.mean(np.abs(a) > 0.99), abs=1e-15)
            assert dead[j, t] == pytest.approx(np.mean([(a[:, c] == 0).all() for c in range(C)]), abs=1e-15)
    assert dead[0, 2] == pytest.approx(1 / C) and dead[1, 4] == pytest.approx(2 / C)
    assert np.nanmax(sat.numpy()) > 0  # the test has saturated values to find
    relu_sat, _ = time_unit_metrics(values, mask, "relu", 0.99)
    assert torch.isnan(relu_sat).all()  # relu has no saturated region


def test_a_nan_at_a_real_position_makes_its_step_nan_and_padding_nan_does_not():
    values, mask = masked_values()
    values[0, 0, 1, 0] = torch.nan  # real (length 7)
    values[0, 1, 5, 0] = torch.nan  # padding (length 3)
    q, _ = time_percentiles(values, mask)
    sat, dead = time_unit_metrics(values, mask, "tanh", 0.99)
    assert torch.isnan(q[0, 1]).all() and torch.isnan(sat[0, 1]) and torch.isnan(dead[0, 1])
    assert torch.isfinite(q[0, 5]).all() and torch.isfinite(sat[0, 5])


def tiny_rnn_config(**record) -> RunConfig:
    raw = {
        "data": {"name": "adding", "n": 8, "n_test": 6, "seq_length": [3, 6]},
        "model": {"name": "rnn", "norm": "none", "depth": 1, "width": 5, "activation": "tanh"},
        "record": record,
    }
    return RunConfig(**raw)


def reference_state_grads(m, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """||dL/dh_t|| per sequence, its root mean square over the real sequences at each t, in float64: the Elman
    recurrence written out, each h_t a tensor of its own whose gradient autograd keeps; L = mean over the samples of
    the squared error."""
    layer = m.layer1
    w, u, b = (p.detach().double().requires_grad_() for p in (layer.fc.weight, layer.rec.weight, layer.b))
    hw, hb = m.head.weight.detach().double(), m.head.bias.detach().double()
    values = x[..., :-1].double()
    h = torch.zeros(len(x), len(b), dtype=torch.float64)
    states = []
    for t in range(x.shape[1]):
        new = torch.tanh(values[:, t] @ w.T + h @ u.T + b)
        h = torch.where(mask[:, t, None], new, h)
        h.retain_grad()
        states.append(h)
    last = mask.sum(1) - 1
    hs = torch.stack(states, 1)
    out = hs[torch.arange(len(x)), last] @ hw.T + hb
    loss = (out - y.double()).square().sum(1).mean()
    loss.backward()
    norms = []
    for t, s in enumerate(states):
        per_sequence = [float(s.grad[k].square().sum()) for k in range(len(x)) if mask[k, t]]
        norms.append(np.sqrt(np.mean(per_sequence)))  # the root mean square over the sequences real at t
    return np.array(norms)


def test_the_gradient_at_each_hidden_state_against_a_float64_recurrence():
    cfg = tiny_rnn_config()
    torch.manual_seed(3)
    models = [build_model(cfg.model, (6, 3), 1) for _ in range(2)]
    kernel = AutogradKernel(models, [cfg, cfg], classification=False, device="cpu")
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6, 3, 5, 4])
    mask = torch.arange(6)[None] < lengths[:, None]
    x = pack_sequences(torch.randn(4, 6, 2, generator=g), mask)[None]
    y = torch.randn(1, 4, 1, generator=g)
    probe = kernel.probe(*kernel.columns(x, y), "train", time=True)
    got = time_grad_norms(probe.time[(1, "grad_state")], probe.mask)
    for j, m in enumerate(models):
        want = reference_state_grads(m, x[0], y[0], mask)
        # float32 forward and backward against float64: a few float32 roundings per step, over 6 steps
        np.testing.assert_allclose(got[j].numpy(), want, rtol=1e-5, atol=1e-9)
    assert set(probe.time) >= {(1, "pre_norm"), (1, "post_norm"), (1, "post_act"), (1, "state"), (1, "pre_norm_h")}


SMALL = ["data.n=40", "data.n_test=20", "train.epochs=1", "train.batch_size=20", "seeds=[1]"]


def test_time_table_through_run_open_results_and_plot_leaves_the_other_tables_as_they_were(tmp_path):
    raw = {
        "name": "t",
        "data": {"name": "sequential_digits", "n": 40, "n_test": 20},
        "model": {"name": "rnn", "depth": 1, "width": 6, "activation": "tanh"},
        "train": {"epochs": 1, "batch_size": 20},
        "record": {"hist_every": 1, "eval_split": "test"},
        "grid": {
            "zip": [
                {"model.norm": "batch_step", "model.norm_paths": "both"},
                {"model.norm": "batch_step", "model.norm_paths": "input"},
                {"model.norm": "layer", "model.norm_paths": "both"},
            ]
        },
    }
    on = run(raw, out=tmp_path / "on", quiet=True)
    off = run(raw, ["record.time=false"], out=tmp_path / "off", quiet=True)
    assert set(on.run_id).isdisjoint(off.run_id)  # record.time is part of a sequence run's id
    res_on, res_off = open_results(tmp_path / "on" / "t"), open_results(tmp_path / "off" / "t")
    time = res_on.time()
    assert res_off.time().empty
    order = ["model.norm", "model.norm_paths", "step", "split", "mode", "layer", "point"]
    for name in ("curves", "layers", "histograms"):
        a, b = (r.table(name).drop(columns="run_id") for r in (res_on, res_off))
        by = [c for c in order if c in a.columns]
        a, b = (t.sort_values(by, ignore_index=True) for t in (a, b))
        pd.testing.assert_frame_equal(a, b)
    assert set(time.step) == {0, 1, 2}
    assert set(time.point) == {"pre_norm", "post_norm", "post_act", "pre_norm_h", "post_norm_h", "state"}
    assert sorted(time.t.unique()) == list(range(64)) and (time.n == 20).all()
    assert time[time.point == "state"].grad_norm.gt(0).all()
    assert time[time.point == "post_act"].saturated_fraction.between(0, 1).all()
    assert time[time.point == "pre_norm"].grad_norm.isna().all()

    # The figures over time: for the runs that recorded time only; variants named by every key that tells them apart.
    exp_on, exp_off = (read_experiment(tmp_path / d / "t") for d in ("on", "off"))
    kinds = {"time_units", "time_grad", "time_dist"}
    assert kinds <= {f.kind for f in figures.planned(exp_on)}
    assert not kinds & {f.kind for f in figures.planned(exp_off)}
    (group,) = [g for g, _ in exp_on.groups()]
    fig = over_time.time_grad(exp_on, group)
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels == [
        "norm=batch_step, norm_paths=both",
        "norm=batch_step, norm_paths=input",
        "norm=layer, norm_paths=both",
    ]
    last = exp_on.tables["time"]
    last = last[(last.point == "post_act") & (last.step == 2)]
    fig = over_time.time_units(exp_on, group)
    images = [im.get_array() for ax in fig.axes for im in ax.images]
    first = first_seed(exp_on.runs)
    for image, (_, r) in zip(images, first.iterrows(), strict=True):
        want = last[last.run_id == r.run_id].sort_values("t").saturated_fraction.to_numpy()
        np.testing.assert_array_equal(np.ma.filled(image, np.nan)[0], want)
    assert fig.axes[-1].get_ylabel() == "share of saturated values"


def test_record_time_changes_nothing_for_the_mlp():
    exp = experiment_from_dict({"name": "m", "data": {"name": "quadratic"}, "record": {"time": False}})
    base = experiment_from_dict({"name": "m", "data": {"name": "quadratic"}})
    assert "time" not in RunConfig().identity()["record"]
    assert exp.runs[0].run_id == base.runs[0].run_id


@pytest.mark.parametrize(
    ("paths", "labels"),
    [
        (["both", "both", "input"], ["norm=none", "norm=batch_step", "norm=batch"]),  # paths follow the norm
        (
            ["both", "input", "both"],
            ["norm=batch_step, norm_paths=both", "norm=batch_step, norm_paths=input", "norm=layer, norm_paths=both"],
        ),
    ],
)
def test_variants_are_named_by_the_zipped_keys_that_tell_them_apart_only(tmp_path, paths, labels):
    norms = ["none", "batch_step", "batch"] if paths[1] == "both" else ["batch_step", "batch_step", "layer"]
    runs = pd.DataFrame(
        {"run_id": list("abcdef"), "model.norm": norms * 2, "model.norm_paths": paths * 2, "seed": [1, 1, 1, 2, 2, 2]}
    )
    tied = [["model.norm", "model.norm_paths"], ["seed"]]
    exp = ExperimentData(tmp_path, runs, runs, ["model.norm", "model.norm_paths", "seed"], tied, "model.norm", [], {})
    variants = compared_variants(exp, runs)
    assert [variant_label(exp, runs, v) for v, _ in variants] == labels
    assert [len(r) for _, r in variants] == [2, 2, 2]  # each variant's two seeds
    assert [run_label(exp, runs, r) for _, r in runs.iloc[:3].iterrows()] == labels
