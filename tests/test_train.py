"""Training a run: divergence is detected and recorded, recording does not disturb training."""

from __future__ import annotations

import math

import torch

from normbench.config import experiment_from_dict, load_experiment
from normbench.data import build_dataset
from normbench.models import build_model
from normbench.record import Recorder
from normbench.train import train_run


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


def test_recording_leaves_running_stats_and_grads_untouched(tiny_raw):
    run = one_run(tiny_raw, **{"model.norm": "batch", "model.activation": "tanh", "seed": 1})
    data = build_dataset(run.config.data)
    torch.manual_seed(0)
    model = build_model(run.config.model, data.input_shape, data.out_features)
    bn = model.layer1.norm
    model.train()
    model(data.x_train[:16]).sum().backward()  # grads and running stats of a "training step"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rec = Recorder(run.config, model, data)
    rec.losses(0)
    rec.layers(0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    assert bn.training  # the mode is restored too


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
