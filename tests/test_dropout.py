"""Dropout (model.dropout): the module's masks against their definition, and whole runs against a float64 loop over
a plain PyTorch model that applies the same masks; stacks, measurements and run ids."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from normbench.config import experiment_from_dict
from normbench.data import batches, build_dataset, steps_per_epoch
from normbench.engine import train_run, train_stack
from normbench.engine.driver import Training
from normbench.engine.plan import PlanError, kernel_for
from normbench.nn.models import Dropout
from tests.test_ics import config, loss_of, plain_model


def test_dropout_zeroes_a_share_p_and_scales_the_rest():
    p, n = 0.3, 200_000
    drop = Dropout(p, key=(5, 2)).train()
    x = torch.rand(n, 1, dtype=torch.float64) + 0.5
    y = drop(x)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] / (1 - p))  # the kept values, scaled by 1 / (1 - p)
    share = kept.double().mean().item()
    assert abs(share - (1 - p)) < 6 * (p * (1 - p) / n) ** 0.5  # binomial: 6 standard errors
    assert int(drop.running_step) == 1
    # The mask of a step depends on seed, layer, step and shape alone.
    assert torch.equal(drop.mask(0, (n, 1)), kept)
    assert torch.equal(drop.mask(7, (4, 9)), Dropout(0.3, key=(5, 2)).mask(7, (4, 9)))
    for other in (drop.mask(8, (4, 9)), Dropout(0.3, key=(5, 3)).mask(7, (4, 9)), Dropout(0.3, (6, 2)).mask(7, (4, 9))):
        assert not torch.equal(other, drop.mask(7, (4, 9)))
    assert torch.equal(drop.eval()(x), x) and int(drop.running_step) == 1  # eval mode: the values, no step counted


class Masked(nn.Module):
    """Multiplies by the run's mask of the current step (the run's own Dropout.mask) and 1 / (1 - p)."""

    def __init__(self, drop: Dropout):
        super().__init__()
        self.drop, self.step = drop, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.drop.mask(self.step, tuple(x.shape)).double() / (1 - self.drop.p)


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("batch_size", ["full", 16])
def test_a_run_with_dropout_equals_a_float64_loop(tiny_raw, norm, batch_size):
    """The autograd kernel's run with dropout against torch.optim.SGD on a plain float64 nn.Sequential that multiplies
    each hidden layer's output by the step's mask, on the run's batches: the same parameters after training."""
    tiny_raw["model"]["dropout"] = 0.25
    tiny_raw["train"] |= {"batch_size": batch_size}
    tiny_raw["data"]["shuffle"] = True
    run = config(tiny_raw, norm, "sgd")
    training = Training([run.config], "autograd", False, torch.device("cpu"))
    training.run(None)
    model, _ = plain_model(run.config)
    own = training.kernel.models[0]
    masks = [Masked(getattr(own, f"layer{i}").drop) for i in range(1, run.config.model.depth + 1)]
    mods = list(model)
    acts = [k for k, m in enumerate(mods) if isinstance(m, nn.Tanh)]
    for k, mask in sorted(zip(acts, masks, strict=True), reverse=True):
        mods.insert(k + 1, mask)
    model = nn.Sequential(*mods)
    data = build_dataset(run.config.data)
    x, y = data.x_train.double(), data.y_train.double()
    cfg = run.config
    order = batches(x, y, cfg.train.minibatch(), cfg.data.shuffle, torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
    for step in range(cfg.train.steps):
        for mask in masks:
            mask.step = step
        opt.zero_grad()
        loss_of(model, *next(order)).backward()
        opt.step()
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    got = training.kernel.theta[0].double()
    # float32 training against float64: a few float32 roundings per step of values of order 1.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert int(masks[0].drop.running_step) == cfg.train.steps  # one step counted per training step


def test_dropout_masks_follow_the_steps_not_the_stack_or_the_measurements(tiny_raw):
    """Runs stacked train bit for bit as each alone, recording every step as recording rarely, with every
    measurement as without; and the dropout is felt."""
    tiny_raw["model"]["dropout"] = 0.3
    tiny_raw["train"] |= {"batch_size": 16}
    tiny_raw["grid"] = {"model.norm": ["batch"], "model.activation": ["tanh"]}
    rarely = [r.config for r in experiment_from_dict(copy.deepcopy(tiny_raw)).runs]
    tiny_raw["record"] |= {"hist_every": 1, "loss_every": 1, "ics_every": 2, "landscape_every": 3}
    tiny_raw["record"] |= {"running_stats": True, "precise_bn": True}
    often = [r.config for r in experiment_from_dict(copy.deepcopy(tiny_raw)).runs]
    a = train_stack(rarely, kernel="autograd")
    b = [train_run(c) for c in often]
    for ra, rb in zip(a, b, strict=True):
        ca, cb = ra.tables["curves"], rb.tables["curves"]
        cb = cb[cb.step.isin(ca.step) & cb["mode"].isin(("train", "eval"))].reset_index(drop=True)
        assert ca.equals(cb)
    tiny_raw["model"]["dropout"] = 0.0
    c = train_run(experiment_from_dict(tiny_raw).runs[0].config).tables["curves"]
    assert c.loss.iloc[-1] != b[0].tables["curves"].loss.iloc[-1]


def test_dropout_trains_on_the_autograd_kernel_and_keeps_run_ids_while_off(tiny_raw):
    off = experiment_from_dict(copy.deepcopy(tiny_raw)).runs
    tiny_raw["model"]["dropout"] = 0.0
    assert [r.run_id for r in experiment_from_dict(copy.deepcopy(tiny_raw)).runs] == [r.run_id for r in off]
    assert "dropout" not in off[0].config.identity()["model"]  # ids from before dropout existed stay valid
    tiny_raw["model"]["dropout"] = 0.5
    on = experiment_from_dict(tiny_raw).runs
    assert not {r.run_id for r in on} & {r.run_id for r in off}
    assert on[0].config.identity()["model"]["dropout"] == 0.5
    assert kernel_for(on[0].config, "auto") == "autograd"
    with pytest.raises(PlanError, match="dropout"):
        kernel_for(on[0].config, "written-out")


def test_precise_bn_draws_a_mask_per_batch_as_training_would(tiny_raw):
    """Precise BN with dropout: in train mode over an epoch of batches, batch k with the masks of step steps + k (as
    training goes on drawing them), in float64; brute force over a copy of the run's trained model. With one mask
    for every batch the number differs, so the test sees which masks were drawn."""
    tiny_raw["model"]["dropout"] = 0.3
    tiny_raw["train"] |= {"batch_size": 16}
    tiny_raw["data"]["shuffle"] = True
    run = config(tiny_raw, "batch", "sgd", precise_bn=True)
    training = Training([run.config], "autograd", False, torch.device("cpu"), torch.float64)
    [result] = training.run(None)
    curves = result.tables["curves"]
    got = curves[(curves["mode"] == "precise") & (curves.split == "train")].loss.item()
    cfg = run.config
    data = build_dataset(cfg.data)
    x, y = data.x_train.double(), data.y_train.double()
    size = cfg.train.minibatch()
    order = batches(x, y, size, cfg.data.shuffle, torch.Generator().manual_seed(cfg.seed))
    epoch = list(itertools.islice(order, steps_per_epoch(len(x), size)))

    def precise_loss(step_of_batch) -> float:
        model = copy.deepcopy(training.kernel.models[0])
        norms = [b.norm for b in (getattr(model, f"layer{i}") for i in range(cfg.model.depth + 1))]
        norms = [n for n in norms if getattr(n, "running_mean", None) is not None]
        drops = [m for m in model.modules() if isinstance(m, Dropout)]
        assert drops and all(int(d.running_step) == cfg.train.steps for d in drops)  # put back after precise BN
        sums = {n: [0.0, 0.0] for n in norms}
        seen = {}
        hooks = [n.register_forward_hook(lambda mod, inp, out: seen.__setitem__(mod, inp[0])) for n in norms]
        model.train()
        for k, (xb, _) in enumerate(epoch):
            for d in drops:
                d.running_step.fill_(step_of_batch(k))
            with torch.no_grad():
                model(xb)
            for n in norms:
                sums[n][0] = sums[n][0] + seen[n].mean(0)
                sums[n][1] = sums[n][1] + seen[n].var(0, unbiased=True)
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for n, (mean, var) in sums.items():
                n.running_mean.copy_(mean / len(epoch))
                n.running_var.copy_(var / len(epoch))
            return loss_of(model.eval(), x, y).item()

    assert len(epoch) > 1
    assert got == pytest.approx(precise_loss(lambda k: cfg.train.steps + k), rel=1e-9)
    assert got != pytest.approx(precise_loss(lambda k: cfg.train.steps), rel=1e-6)
