"""Training a run: divergence is detected and recorded, recording does not disturb training."""

from __future__ import annotations

import math

import pytest
import torch

from normbench.config import experiment_from_dict, load_experiment
from normbench.engine import train_run
from normbench.engine.driver import Training
from normbench.nn.models import build_model


def one_run(raw: dict, **params):
    exp = experiment_from_dict(raw)
    return next(r for r in exp.runs if all(r.params[k] == v for k, v in params.items()))


def test_seed_relu_without_bn_diverges_at_step_1_and_records_the_nan():
    run = next(
        r
        for r in load_experiment("morvan_tf23", ["train.steps=20", "seeds=[1]"]).runs
        if r.params == {"model.norm": "none", "model.activation": "relu", "seed": 1}
    )
    result = train_run(run.config)
    assert (result.status, result.diverged_step, result.steps_done) == ("diverged", 1, 1)
    curves = result.tables["curves"]
    train = curves[(curves.split == "train") & (curves["mode"] == "train")]
    assert train.step.tolist() == [0, 1]
    assert math.isfinite(train.loss.iloc[0]) and train.loss.iloc[0] > 1e7  # the N(0, 1) net starts far off
    assert not math.isfinite(train.loss.iloc[1])
    hists = result.tables["histograms"]
    at_div = hists[hists.step == 1]
    assert len(at_div) and (at_div.nan + at_div.inf).sum() > 0  # the NaN is in the tables, counted


@pytest.mark.parametrize("kernel", ["written-out", "autograd"])
def test_recording_leaves_parameters_statistics_and_gradients_untouched(tiny_raw, kernel):
    """A recording pass (losses in both modes, a probe with its backward) changes nothing a training step uses."""
    run = one_run(tiny_raw, **{"model.norm": "batch", "model.activation": "tanh", "seed": 1})
    training = Training([run.config], kernel, False, torch.device("cpu"))
    k = training.kernel
    k.step(*training.splits["train"])  # gradients and held-back statistics of a training step
    k.commit(torch.ones(1, dtype=torch.bool))
    k.step(*training.splits["train"])
    before = [t.clone() for t in (k.theta, k.grad, k.pending, k.stats if kernel == "autograd" else k.stats_flat)]
    training.rec.losses(0, [0])
    training.rec.layers(0, [0])
    after = (k.theta, k.grad, k.pending, k.stats if kernel == "autograd" else k.stats_flat)
    for b, a in zip(before, after, strict=True):
        assert torch.equal(a, b)
    assert any(p.startswith("grad_") for p in training.rec.tables(0)["histograms"].point)  # gradients were taken
    if kernel == "autograd":  # and none was left on the modules
        assert all(p.grad is None for m in k.models for p in m.parameters())


def test_eval_mode_loss_uses_running_statistics(tiny_raw):
    run = one_run(tiny_raw, **{"model.norm": "batch", "model.activation": "relu", "seed": 1})
    curves = train_run(run.config).tables["curves"]
    at0 = curves[(curves.step == 0) & (curves.split == "train")].set_index("mode").loss
    # At step 0 the running statistics are still (0, 1): eval mode differs from batch statistics.
    assert at0["train"] != at0["eval"]


def test_layer_names_follow_roles(tiny_raw):
    run = one_run(tiny_raw, **{"model.norm": "batch", "model.activation": "relu", "seed": 1})
    model = build_model(run.config.model, (1,), 1)
    names = {n for n, _ in model.named_modules()}
    assert {"layer0.norm", "layer1.fc", "layer1.norm", "layer1.act", "layer3.act", "head"} <= names


def test_training_is_deterministic_per_seed(tiny_raw):
    run = one_run(tiny_raw, **{"model.norm": "batch", "model.activation": "tanh", "seed": 2})
    a, b = train_run(run.config), train_run(run.config)
    assert a.tables["curves"].loss.tolist() == b.tables["curves"].loss.tolist()


def test_minibatches_and_adam_train(tiny_raw):
    tiny_raw["train"] |= {"optimizer": "adam", "lr": 0.01, "batch_size": 16, "steps": 30}
    tiny_raw["data"]["shuffle"] = True
    run = one_run(tiny_raw, **{"model.norm": "batch", "model.activation": "relu", "seed": 1})
    r = train_run(run.config)
    train = r.tables["curves"].query("split == 'train' and mode == 'train'")
    assert r.status == "ok" and train.loss.iloc[-1] < train.loss.iloc[0]


@pytest.mark.parametrize("kernel", ["written-out", "autograd"])
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("morvan_tf23", ["grid.model.norm=[batch]", "seeds=[1]", "train.steps=60"]),  # full batch, SGD, BN
        ("morvan_pt504", ["seeds=[2]", "train.steps=40"]),  # shuffled mini-batches, Adam, no norm and BN
        ("init_scale", ["seeds=[1]", "grid.model.weight_init.std=[0.1]", "train.epochs=null", "train.steps=30"]),
    ],
)
def test_the_driver_trains_as_a_plain_pytorch_loop(name, overrides, kernel):
    """The driver (one run, M = 1, recording on) against a loop written with nothing of the driver: the ordinary
    model, torch.optim, data.batches (bench.plain_loop). In float64, where rounding cannot grow to matter, the
    trained function agrees to one float32 ulp (2^-23): the loss on the whole training split with batch
    statistics after the last step, and without a norm every parameter. (With batch norm some parameters, a bias
    or an input shift right before a norm, have a gradient that is 0 but for rounding, and Adam turns any nonzero
    gradient into a step of about lr: such parameters wander with the rounding, and nothing downstream sees them.)"""
    import torch.nn.functional as F

    from normbench.bench import plain_loop
    from normbench.data import build_dataset

    for run in load_experiment(name, overrides).runs:
        ours = train_run(run.config, kernel=kernel, dtype=torch.float64)
        last = ours.tables["curves"].query("split == 'train' and mode == 'train'").iloc[-1]
        model = plain_loop([run.config], dtype=torch.float64)[0].train()
        data = build_dataset(run.config.data)
        with torch.no_grad():
            out = model(data.x_train.double())
        if data.task == "classification":
            expected = F.cross_entropy(out, data.y_train).item()
        else:
            expected = (out - data.y_train.double()).square().sum(1).mean().item()
        assert last.loss == pytest.approx(expected, rel=2.0**-23, abs=0), run.params
        if run.config.model.norm == "none":
            training = Training([run.config], kernel, False, torch.device("cpu"), torch.float64)
            training.run(None)
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            mine = training.kernel.theta[0]
            if kernel == "written-out":  # its own order and shapes: the plain model's parameters laid out alike
                from normbench.engine.written_out import reference_tensors

                params = reference_tensors(model)[0]
                flat = training.kernel.spec.flatten({n: v.detach()[None] for n, v in params.items()})[0]
            torch.testing.assert_close(mine, flat, rtol=2.0**-23, atol=2.0**-23 * flat.abs().max().item())
