"""The loss landscape along the gradient, batch norm's running statistics against the training set's, and precise
BN: each against a brute-force float64 computation on a plain PyTorch model (tests/test_ics.py builds it)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normbench.config import experiment_from_dict
from normbench.data import batches, build_dataset, steps_per_epoch
from normbench.engine import train_run
from normbench.engine.driver import Training
from normbench.views.summary import landscape_summary
from tests.test_ics import config, loss_of, plain_model

STEPS = 7


def sgd_loop(cfg, at_step):
    """Train the plain float64 model with torch.optim.SGD on the run's batches (data.batches, in the driver's order:
    the order is the config's, not what is checked); call at_step(step, model, batch, (x, y)) before each update,
    with the step's batch, and after the last (batch None), (x, y) being the whole training split; returns what
    the calls returned, by step."""
    data = build_dataset(cfg.data)
    x, y = data.x_train.double(), data.y_train.double()
    order = batches(x, y, cfg.train.minibatch(), cfg.data.shuffle, torch.Generator().manual_seed(cfg.seed))
    model, _ = plain_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
    out = {}
    for step in range(cfg.train.steps + 1):
        batch = next(order) if step < cfg.train.steps else None
        out[step] = at_step(step, model, batch, (x, y))
        if batch is None:
            break
        opt.zero_grad()
        loss_of(model, *batch).backward()
        opt.step()
    return out


def flat_grad(model, x, y) -> tuple[float, torch.Tensor]:
    model.zero_grad()
    loss = loss_of(model, x, y)
    loss.backward()
    return loss.item(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def brute_force_landscape(cfg) -> dict[tuple[int, float], tuple[float, float, float]]:
    """{(step, scale): (distance, loss, ||g - g'||)}: at each measured step, on the step's batch, a deep copy of the
    model moved to theta - k lr g, its loss and gradient by autograd, in train mode (batch statistics)."""

    def at_step(step, model, batch, full):
        if step % cfg.record.landscape_every or batch is None:
            return {}
        x, y = batch
        model.train()
        loss, g = flat_grad(copy.deepcopy(model), x, y)  # a copy: the running statistics stay as they are
        rows = {0.0: (0.0, loss, 0.0)}
        for k in cfg.record.landscape_scales:
            moved = copy.deepcopy(model)
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(
                    torch.nn.utils.parameters_to_vector(moved.parameters()) - k * cfg.train.lr * g, moved.parameters()
                )
            there, g_there = flat_grad(moved, x, y)
            rows[k] = ((k * cfg.train.lr * g).norm().item(), there, (g_there - g).norm().item())
        return rows

    return {(s, k): v for s, rows in sgd_loop(cfg, at_step).items() for k, v in rows.items()}


@pytest.mark.parametrize("kernel", ["written-out", "autograd"])
@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("batch_size", ["full", 16])
def test_landscape_equals_a_brute_force_computation(tiny_raw, kernel, norm, batch_size):
    tiny_raw["train"]["batch_size"] = batch_size
    tiny_raw["data"]["shuffle"] = batch_size != "full"
    run = config(tiny_raw, norm, "sgd", landscape_every=3, landscape_scales=[0.5, 2.0, 8.0])
    table = train_run(run.config, kernel=kernel, dtype=torch.float64).tables["landscape"]
    expected = brute_force_landscape(run.config)
    assert sorted(zip(table.step, table.scale, strict=True)) == sorted(expected)
    for row in table.itertuples():
        distance, loss, change = expected[(row.step, row.scale)]
        assert row.distance == pytest.approx(distance, rel=1e-9, abs=0)
        assert row.loss == pytest.approx(loss, rel=1e-9, abs=0)
        assert row.grad_change == pytest.approx(change, rel=1e-7, abs=1e-12)


def test_landscape_summary_is_max_and_range_over_the_points():
    table = pd.DataFrame(
        {
            "step": [0] * 3 + [5] * 3 + [9] * 3,
            "scale": [0.0, 1.0, 2.0] * 3,
            "distance": [0.0, 0.1, 0.2, 0.0, 0.3, 0.6, 0.0, 0.3, 0.6],
            "loss": [3.0, 2.0, 4.0, 1.0, 0.5, np.inf, np.nan, 1.0, 2.0],
            "grad_change": [0.0, 0.5, 0.6, 0.0, 0.3, np.nan, 0.0, 0.3, 0.9],
        }
    )
    s = landscape_summary(table).set_index("step")
    assert s.loc[0].tolist() == pytest.approx([4.0 - 2.0, 0.6, max(0.5 / 0.1, 0.6 / 0.2)])
    assert s.loc[5].tolist() == [np.inf] * 3  # a step of that size blows up: as rough as can be
    assert s.loc[9].isna().all()  # the start itself is not finite: no number


def norm_inputs(net: nn.Module, x: torch.Tensor, modules: list[nn.Module]) -> dict[nn.Module, torch.Tensor]:
    """Each of `modules`' input during one forward of x (forward hooks)."""
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.__setitem__(mod, inp[0])) for m in modules]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def bn_inputs(model: nn.Sequential, x: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    return norm_inputs(model, x, [m for m in model if isinstance(m, nn.BatchNorm1d)])


def brute_force_running(cfg):
    """{step: (per hidden layer (mean_err, var_err), {mode: training-split loss})} from the plain model: each
    BatchNorm1d's input over the training split in eval mode against its running buffers; then precise BN as
    fvcore's update_bn_stats computes it (train mode over one epoch of batches, in the order of training's first
    epoch, the buffers set to the average of the batch means and unbiased variances) and the population statistics
    (eval mode, one layer at a time)."""
    eps, size = cfg.model.norm_eps, cfg.train.minibatch()

    def at_step(step, model, batch, full):
        if step % cfg.record.hist_every and batch is not None:
            return None
        x, y = full
        seen = bn_inputs(model.eval(), x)
        bns = [m for m in model if isinstance(m, nn.BatchNorm1d)]
        errors = []
        for bn in bns[1:] if cfg.model.normalize_input else bns:  # hidden layers only
            mp, vp = seen[bn].mean(0), seen[bn].var(0, unbiased=True)
            mean_err = ((bn.running_mean - mp).square() / (vp + eps)).mean().sqrt().item()
            var_err = ((bn.running_var + eps) / (vp + eps)).log().square().mean().sqrt().item()
            errors.append((mean_err, var_err))
        losses = {}
        precise = copy.deepcopy(model).train()
        first = batches(x, y, size, cfg.data.shuffle, torch.Generator().manual_seed(cfg.seed))  # training's order
        epoch = list(itertools.islice(first, steps_per_epoch(len(x), size)))
        sums = {bn: [0.0, 0.0] for bn in precise if isinstance(bn, nn.BatchNorm1d)}
        for xb, _ in epoch:
            for bn, value in bn_inputs(precise, xb).items():
                sums[bn][0] = sums[bn][0] + value.mean(0)
                sums[bn][1] = sums[bn][1] + value.var(0, unbiased=True)
        with torch.no_grad():
            for bn, (mean, var) in sums.items():
                bn.running_mean.copy_(mean / len(epoch))
                bn.running_var.copy_(var / len(epoch))
            losses["precise"] = loss_of(precise.eval(), x, y).item()
        population = copy.deepcopy(model).eval()
        for bn in [m for m in population if isinstance(m, nn.BatchNorm1d)]:  # in forward order, one at a time
            value = bn_inputs(population, x)[bn]
            with torch.no_grad():
                bn.running_mean.copy_(value.mean(0))
                bn.running_var.copy_(value.var(0, unbiased=True))
        with torch.no_grad():
            losses["population"] = loss_of(population, x, y).item()
        model.train()
        return errors, losses

    return {s: v for s, v in sgd_loop(cfg, at_step).items() if v is not None}


@pytest.mark.parametrize("kernel", ["written-out", "autograd"])
@pytest.mark.parametrize("batch_size", ["full", 16])
def test_running_statistics_errors_and_precise_bn_equal_a_brute_force_computation(tiny_raw, kernel, batch_size):
    tiny_raw["train"]["batch_size"] = batch_size
    tiny_raw["data"]["shuffle"] = batch_size != "full"
    run = config(tiny_raw, "batch", "sgd", running_stats=True, precise_bn=True)
    tables = train_run(run.config, kernel=kernel, dtype=torch.float64).tables
    expected = brute_force_running(run.config)
    layers = tables["layers"]
    assert sorted(set(layers.step)) == sorted(expected)
    for row in layers.itertuples():
        mean_err, var_err = expected[row.step][0][row.layer - 1]
        assert row.running_mean_err == pytest.approx(mean_err, rel=1e-9, abs=1e-12), (row.step, row.layer)
        assert row.running_var_err == pytest.approx(var_err, rel=1e-9, abs=1e-12), (row.step, row.layer)
    curves = tables["curves"]
    for mode in ("precise", "population"):
        rows = curves[curves["mode"] == mode]
        assert set(rows.split) == {"train", "test"} and set(rows.step) == {STEPS}
        train = rows[rows.split == "train"].loss.item()
        assert train == pytest.approx(expected[STEPS][1][mode], rel=1e-9), mode


@pytest.mark.parametrize(
    ("kernel", "norm"), [("written-out", "batch"), ("autograd", "batch"), ("autograd", "noisy_batch")]
)
def test_new_measurements_leave_training_untouched(tiny_raw, kernel, norm):
    """A run recording the landscape, ICS, running-statistics errors and precise BN trains bit for bit as without
    them; with noisy BN too, whose noise follows a step counter the measurements' forwards must not move."""
    tiny_raw["train"] |= {"batch_size": 16}
    tiny_raw["data"]["shuffle"] = True
    tiny_raw["grid"]["model.norm"].append("noisy_batch")
    plain = config(copy.deepcopy(tiny_raw), norm, "momentum")
    measured = config(tiny_raw, norm, "momentum", landscape_every=2, ics_every=3, running_stats=True, precise_bn=True)
    assert plain.run_id != measured.run_id
    a = Training([plain.config], kernel, False, torch.device("cpu"))
    b = Training([measured.config], kernel, False, torch.device("cpu"))
    ra, rb = a.run(None)[0], b.run(None)[0]
    ca, cb = ra.tables["curves"], rb.tables["curves"]
    assert ca.equals(cb[~cb["mode"].isin(("precise", "population"))].reset_index(drop=True))
    la, lb = ra.tables["layers"], rb.tables["layers"]
    others = [c for c in la.columns if not c.startswith(("running_", "ics_"))]
    lb = lb[lb.step.isin(la.step)].reset_index(drop=True)  # ICS adds steps of its own
    assert la[others].equals(lb[others]) and la.running_mean_err.isna().all() and lb.running_mean_err.notna().all()
    assert torch.equal(a.kernel.theta, b.kernel.theta)
    stats = "stats" if kernel == "autograd" else "stats_flat"
    assert torch.equal(getattr(a.kernel, stats), getattr(b.kernel, stats))
    assert "landscape" not in ra.tables and len(rb.tables["landscape"]) > 0


def test_options_off_keep_run_ids(tiny_raw):
    off = config(copy.deepcopy(tiny_raw), "none", "sgd", landscape_every=None, running_stats=False, precise_bn=False)
    assert off.run_id == config(copy.deepcopy(tiny_raw), "none", "sgd").run_id
    assert config(tiny_raw, "none", "sgd", running_stats=True).run_id != off.run_id


def test_without_running_statistics_the_columns_are_nan(tiny_raw):
    run = config(tiny_raw, "none", "sgd", running_stats=True, precise_bn=True)
    tables = train_run(run.config).tables
    assert tables["layers"].running_mean_err.isna().all()
    assert set(tables["curves"]["mode"]) == {"train", "eval"}  # nothing to recompute without running statistics


def test_stored_plotted_and_documented(tmp_path, tiny_raw):
    """The landscape table and the new layer columns reach the results folder as docs/results-format.md lists them,
    and `normbench plot` draws the landscape and running-statistics figures from them."""
    from PIL import Image
    from rich.console import Console

    from normbench.config import experiment_from_dict
    from normbench.results import load_table
    from normbench.sweep import run_experiment
    from normbench.views.render import plot_experiment
    from tests.test_store import documented_columns

    tiny_raw["record"] |= {"landscape_every": 4, "running_stats": True, "precise_bn": True}
    tiny_raw["grid"] = {"model.norm": ["none", "batch", "noisy_batch"], "model.activation": ["tanh"]}
    exp = experiment_from_dict(tiny_raw)
    run_experiment(exp, tmp_path, console=Console(quiet=True))
    exp_dir = tmp_path / exp.name
    for name in ("landscape", "layers", "curves"):
        assert set(load_table(exp_dir, name).columns) == documented_columns(f"{name}.parquet"), name
    assert len(load_table(exp_dir, "landscape")) == len(exp.runs) * 3 * 5  # steps 0, 4, 8; the start and 4 scales
    paths = {p.name: p for p in plot_experiment(exp_dir)}
    for name in ("landscape_activation-tanh.png", "running_activation-tanh.png"):
        assert name in paths
        with Image.open(paths[name]) as image:
            assert image.size[0] == 900


def test_an_experiment_without_the_landscape_has_no_landscape_rows(tmp_path, tiny_raw):
    from rich.console import Console

    from normbench.config import experiment_from_dict
    from normbench.results import load_table
    from normbench.sweep import run_experiment

    exp = experiment_from_dict(tiny_raw)
    run_experiment(exp, tmp_path, console=Console(quiet=True))
    assert load_table(tmp_path / exp.name, "landscape").empty
    assert not any((tmp_path / exp.name / "runs" / r.run_id / "landscape.parquet").exists() for r in exp.runs)


def test_an_option_in_use_is_in_the_run_id_whatever_its_value(tiny_raw):
    """Later options leave the id only while off; in use, they are hashed even at their default, so that a changed
    default can never give a stored result another meaning under the same id."""
    run = config(copy.deepcopy(tiny_raw), "batch", "sgd", landscape_every=3)
    assert run.config.identity()["record"]["landscape_scales"] == [0.5, 1.0, 2.0, 4.0]  # the default, hashed
    assert "landscape_scales" not in config(copy.deepcopy(tiny_raw), "batch", "sgd").config.identity()["record"]
    tiny_raw["grid"]["model.norm"].append("noisy_batch")
    noisy = config(copy.deepcopy(tiny_raw), "noisy_batch", "sgd")
    assert noisy.config.identity()["model"]["norm_noise"] == list(noisy.config.model.norm_noise)
    assert "norm_noise" not in config(tiny_raw, "batch", "sgd").config.identity()["model"]


def test_a_stack_of_learning_rates_measures_each_run_as_alone(tiny_raw):
    """Runs of one structure train together with their own learning rates: each run's landscape is its own (the
    points lie at multiples of its lr), as when it trains alone; float64, so the stacked and single computations
    agree to rounding."""
    from normbench.engine import train_stack

    tiny_raw["grid"] = {"model.norm": ["batch"], "model.activation": ["tanh"], "train.lr": [0.001, 0.01, 0.05]}
    tiny_raw["record"] |= {"landscape_every": 4}
    runs = experiment_from_dict(tiny_raw).runs
    stacked = train_stack([r.config for r in runs], kernel="written-out", dtype=torch.float64)
    for run, together in zip(runs, stacked, strict=True):
        alone = train_run(run.config, kernel="written-out", dtype=torch.float64).tables["landscape"]
        pd.testing.assert_frame_equal(together.tables["landscape"], alone, rtol=1e-10, atol=1e-14)


def test_cnn_running_statistics_and_precise_bn_equal_a_loop_over_the_model(tiny_raw):
    """Conv maps: a channel's statistics are over every sample and position. The run's own CNN (models.py) trained by
    a plain torch.optim loop in float64, its BatchNorm2d inputs taken by forward hooks, against the autograd
    kernel's running_*_err and precise / population losses."""
    from normbench.engine.base import reference_models
    from normbench.nn.models import recorded_layers

    raw = {
        "name": "cnn",
        "seed": 3,
        "data": {"name": "digits", "n": 96, "n_test": 48, "shuffle": True},
        "model": {"name": "cnn", "channels": [3, 4], "norm": "batch", "norm_momentum": 0.5, "activation": "tanh"},
        "train": {"optimizer": "sgd", "lr": 0.1, "steps": 4, "batch_size": 32},
        "record": {"loss_every": 2, "hist_every": 2, "bins": 5, "running_stats": True, "precise_bn": True},
    }
    cfg = experiment_from_dict(raw).runs[0].config
    tables = train_run(cfg, kernel="autograd", dtype=torch.float64).tables
    data = build_dataset(cfg.data)
    x, y = data.x_train.double(), data.y_train
    model = reference_models([cfg], data)[0].double()
    norms = [block.norm for block in recorded_layers(model)[1:]]
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
    order = batches(x, y, 32, True, torch.Generator().manual_seed(cfg.seed))
    eps = cfg.model.norm_eps

    def norms_of(net):
        return [block.norm for block in recorded_layers(net)[1:]]

    def inputs(net, xs):
        return norm_inputs(net, xs, norms_of(net))

    def channel_stats(v):  # (N, C, H, W): over samples and positions
        flat = v.transpose(0, 1).reshape(v.shape[1], -1)
        return flat.mean(1), flat.var(1, unbiased=True)

    def loss(net):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(net.eval()(x), y).item()

    layers = tables["layers"].set_index(["step", "layer"])
    for step in range(cfg.train.steps + 1):
        if step % 2 == 0:
            seen = inputs(model.eval(), x)
            for i, n in enumerate(norms, start=1):
                mp, vp = channel_stats(seen[n])
                mean_err = ((n.running_mean - mp).square() / (vp + eps)).mean().sqrt().item()
                var_err = ((n.running_var + eps) / (vp + eps)).log().square().mean().sqrt().item()
                assert layers.loc[(step, i), "running_mean_err"] == pytest.approx(mean_err, rel=1e-9)
                assert layers.loc[(step, i), "running_var_err"] == pytest.approx(var_err, rel=1e-9)
        if step == cfg.train.steps:
            break
        xb, yb = next(order)
        model.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    expected = {}
    precise = copy.deepcopy(model).train()
    first = batches(x, y, 32, True, torch.Generator().manual_seed(cfg.seed))
    epoch = list(itertools.islice(first, steps_per_epoch(len(x), 32)))
    sums = {}
    for xb, _ in epoch:
        for n, v in inputs(precise, xb).items():
            m, var = channel_stats(v)
            sums[n] = [a + b for a, b in zip(sums.get(n, [0.0, 0.0]), (m, var), strict=True)]
    with torch.no_grad():
        for n, (m, var) in sums.items():
            n.running_mean.copy_(m / len(epoch))
            n.running_var.copy_(var / len(epoch))
    expected["precise"] = loss(precise)
    population = copy.deepcopy(model).eval()
    for n in norms_of(population):
        m, var = channel_stats(inputs(population, x)[n])
        with torch.no_grad():
            n.running_mean.copy_(m)
            n.running_var.copy_(var)
    expected["population"] = loss(population)
    curves = tables["curves"]
    for mode, value in expected.items():
        row = curves[(curves["mode"] == mode) & (curves.split == "train")]
        assert row.loss.item() == pytest.approx(value, rel=1e-9), mode
