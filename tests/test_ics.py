"""Internal covariate shift (Santurkar et al. 2018, sec. 2.2): both kernels against a brute-force float64 computation
on a plain PyTorch model, and recording it leaves training untouched."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from normbench.config import ConfigError, experiment_from_dict
from normbench.data import build_dataset
from normbench.engine import train_run
from normbench.engine.base import reference_models
from normbench.engine.driver import Training

STEPS, EVERY = 7, 3  # measured at steps 0, 3, 6


def config(tiny_raw, norm: str, optimizer: str, activation: str = "tanh", **record):
    # The tutorial's settings: Wx+b before the norm, the input normalized too.
    tiny_raw["model"] |= {"bias": True, "normalize_input": norm == "batch", "norm_eps": 0.001, "norm_momentum": 0.5}
    tiny_raw["train"] |= {"optimizer": optimizer, "lr": 0.01, "steps": STEPS}
    tiny_raw["record"] |= record
    tiny_raw["seeds"] = [1]
    exp = experiment_from_dict(tiny_raw)
    return next(r for r in exp.runs if r.params["model.norm"] == norm and r.params["model.activation"] == activation)


def plain_model(cfg) -> tuple[nn.Sequential, list[int]]:
    """The run's MLP as an nn.Sequential of Linear, BatchNorm1d and activation modules, with the initial values of
    the run's own model (the same draws of its seed); and the positions of the hidden layers' Linear modules."""
    m = cfg.model
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[m.activation]
    bn = {"eps": m.norm_eps, "momentum": m.norm_momentum}
    mods: list[nn.Module] = [nn.BatchNorm1d(1, **bn)] if m.norm == "batch" and m.normalize_input else []
    hidden, width_in = [], 1
    for _ in range(m.depth):
        hidden.append(len(mods))
        mods.append(nn.Linear(width_in, m.width))
        mods += [nn.BatchNorm1d(m.width, **bn)] if m.norm == "batch" else []
        mods.append(act())
        width_in = m.width
    mods.append(nn.Linear(width_in, 1))
    seq = nn.Sequential(*mods).double()
    data = build_dataset(cfg.data)
    init = list(reference_models([cfg], data)[0].parameters())
    mine = list(seq.parameters())
    assert [p.shape for p in init] == [p.shape for p in mine]
    with torch.no_grad():
        for p, q in zip(mine, init, strict=True):
            p.copy_(q.double())
    return seq, hidden


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x) - y).square().sum(1).mean()


def weight_grads(model: nn.Sequential, hidden: list[int], x, y) -> list[torch.Tensor]:
    model.zero_grad()
    loss_of(model, x, y).backward()
    return [model[k].weight.grad.clone() for k in hidden]


def brute_force_ics(cfg) -> dict[tuple[int, int], tuple[float, float]]:
    """{(step, layer): (||G - G'||, cos(G, G'))} from a plain training loop with torch.optim: at each measured step,
    the optimizer's step taken on a deep copy of the model and the optimizer, and for each hidden layer i a copy of the
    model whose modules before layer i's Linear are those of the stepped copy."""
    data = build_dataset(cfg.data)
    x, y = data.x_train.double(), data.y_train.double()
    model, hidden = plain_model(cfg)
    tc = cfg.train
    if tc.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), eps=1e-8)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=tc.lr)
    out = {}
    for step in range(tc.steps):
        if step % cfg.record.ics_every == 0:
            g = weight_grads(model, hidden, x, y)
            stepped, stepped_opt = copy.deepcopy((model, opt))
            stepped_opt.zero_grad()
            loss_of(stepped, x, y).backward()
            stepped_opt.step()
            for i, k in enumerate(hidden, start=1):
                mixed = copy.deepcopy(model)
                for a, b in zip(mixed[:k], stepped[:k], strict=True):
                    a.load_state_dict(b.state_dict())
                h = weight_grads(mixed, hidden, x, y)[i - 1]
                cos = (g[i - 1] * h).sum() / (g[i - 1].norm() * h.norm())
                out[(step, i)] = ((g[i - 1] - h).norm().item(), cos.item())
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    return out


@pytest.mark.parametrize("kernel", ["written-out", "autograd"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_ics_equals_a_brute_force_computation_with_torch_optim(tiny_raw, kernel, optimizer, norm):
    run = config(tiny_raw, norm, optimizer, ics_every=EVERY)
    layers = train_run(run.config, kernel=kernel, dtype=torch.float64).tables["layers"]
    expected = brute_force_ics(run.config)
    measured = layers.dropna(subset=["ics_l2"])
    assert sorted(zip(measured.step, measured.layer, strict=True)) == sorted(expected)
    for row in measured.itertuples():
        l2, cos = expected[(row.step, row.layer)]
        assert row.ics_l2 == pytest.approx(l2, rel=2.0**-23, abs=0), (row.step, row.layer)
        assert row.ics_cos == pytest.approx(cos, rel=2.0**-23, abs=0), (row.step, row.layer)
    # Layer 1 has nothing upstream but the input norm: without it, no shift at all.
    first = measured[measured.layer == 1]
    assert (first.ics_l2 == 0).all() == (norm == "none")
    assert (measured[measured.layer > 1].ics_l2 > 0).all()
    assert layers.ics_l2.isna().sum() == len(layers) - len(expected)  # NaN where not measured


@pytest.mark.parametrize("kernel", ["written-out", "autograd"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_recording_ics_leaves_training_untouched(tiny_raw, kernel, optimizer):
    """Losses, every other layer statistic, the final parameters, running statistics and optimizer state of a run
    with record.ics_every set equal those of the same run without it, bit for bit (float32)."""
    tiny_raw["train"] |= {"batch_size": 16}
    tiny_raw["data"]["shuffle"] = True
    plain = config(copy.deepcopy(tiny_raw), "batch", optimizer)
    measured = config(tiny_raw, "batch", optimizer, ics_every=2)
    assert plain.run_id != measured.run_id
    a = Training([plain.config], kernel, False, torch.device("cpu"))
    b = Training([measured.config], kernel, False, torch.device("cpu"))
    ra, rb = a.run(None)[0], b.run(None)[0]
    assert ra.tables["curves"].loss.tolist() == rb.tables["curves"].loss.tolist()
    la, lb = ra.tables["layers"], rb.tables["layers"]
    assert la.ics_l2.isna().all() and lb.ics_l2.notna().any()
    others = [c for c in la.columns if not c.startswith("ics_")]
    assert la[others].equals(lb.loc[lb.step.isin(la.step), others].reset_index(drop=True))
    assert torch.equal(a.kernel.theta, b.kernel.theta)
    stats = "stats" if kernel == "autograd" else "stats_flat"
    assert torch.equal(getattr(a.kernel, stats), getattr(b.kernel, stats))
    assert a.opt.t == b.opt.t and a.opt.state.keys() == b.opt.state.keys()
    assert all(torch.equal(a.opt.state[k], b.opt.state[k]) for k in a.opt.state)


def test_steps_with_ics_only_have_nan_layer_statistics(tiny_raw):
    run = config(tiny_raw, "batch", "sgd", ics_every=4)  # hist_every 6, 7 steps: ICS at 0, 4; the rest at 0, 6, 7
    layers = train_run(run.config).tables["layers"]
    assert sorted(set(layers.step)) == [0, 4, 6, 7]
    by_step = layers.groupby("step")
    assert by_step.ics_l2.apply(lambda v: v.notna().all()).to_dict() == {s: s % 4 == 0 for s in by_step.groups}
    assert by_step.grad_norm.apply(lambda v: v.notna().all()).to_dict() == {s: s != 4 for s in by_step.groups}
    assert not math.isnan(layers.ics_cos.max()) and layers.ics_cos.max() <= 1 + 1e-6


def test_ics_every_is_validated_and_off_keeps_run_ids(tiny_raw):
    with pytest.raises(ConfigError, match="ics_every"):
        config(copy.deepcopy(tiny_raw), "none", "sgd", ics_every=0)
    off = config(copy.deepcopy(tiny_raw), "none", "sgd", ics_every=None)
    assert off.run_id == config(tiny_raw, "none", "sgd").run_id


def test_a_model_out_of_forward_order_is_refused():
    from normbench.engine.autograd import check_forward_order

    check_forward_order(
        ["layer0.norm.weight", "layer1.fc.weight", "layer1.norm.weight", "layer2.fc.weight", "head.bias"]
    )
    with pytest.raises(ValueError, match=r"out of forward order \(layer1\.fc\.weight"):
        check_forward_order(["layer2.fc.weight", "layer1.fc.weight", "head.weight"])
    with pytest.raises(ValueError, match="out of forward order"):
        check_forward_order(["head.weight", "layer1.fc.weight"])
