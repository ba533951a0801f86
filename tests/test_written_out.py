"""The written-out kernel reproduces the autograd kernel (ordinary nn.Modules, gradients from autograd) through
the same driver: loss curves, divergence steps, dead and saturated fractions, histograms.

How close is close enough is not tuned. Trained in float64, where rounding is 2^29 times smaller than in float32,
the two kernels' loss curves must agree to one float32 ulp (2^-23, relative), and their saturated and zero shares
to 1e-9: the same computation as far as any float32 result can tell. A wrong derivative or a missed term is off by
far more (as in the float64 derivative test below). This is checked over the first 60 steps of each run: past
them, plain SGD with batch norm on the parabola is chaotic enough that even float64's rounding grows to 1e-8 by
step 250 (in float32 the same runs drift percent-level apart within a few dozen steps, whichever kernel computes
them: measured, README "Rounding sensitivity"). In float32, as users get them, the runs must agree on everything
discrete over the whole run: status, divergence step, which losses are finite, dead units, histogram row counts,
NaN and inf counts, and the step-0 histograms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from normbench.config import load_experiment
from normbench.engine import kernel_for, stack_groups, train_run, train_stack
from normbench.record import GRAD_POINTS, POINTS

ULP32 = 2.0**-23
EXACT_STEPS = 60


def assert_same_in_float64(ours, reference, what=None) -> None:
    ours, reference = np.asarray(ours, dtype=float), np.asarray(reference, dtype=float)
    assert ours.shape == reference.shape and (np.isfinite(ours) == np.isfinite(reference)).all(), what
    finite = np.isfinite(reference)
    np.testing.assert_allclose(ours[finite], reference[finite], rtol=ULP32, atol=0, err_msg=str(what))


def compare(name: str, overrides: list[str]) -> None:
    exp = load_experiment(name, overrides)
    groups = stack_groups(exp.runs)
    assert sum(len(g) for g in groups) == len(exp.runs) and len(groups) < len(exp.runs)
    for group in groups:
        cfgs = [r.config for r in group]
        stacked, exact = train_stack(cfgs), train_stack(cfgs, dtype=torch.float64)
        assert {s.provenance["kernel"] for s in stacked} == {"written-out"}
        for run, s, s64 in zip(group, stacked, exact, strict=True):
            r, r64 = (
                train_run(run.config, kernel="autograd"),
                train_run(run.config, kernel="autograd", dtype=torch.float64),
            )
            assert (s.status, s.diverged_step, s.steps_done) == (r.status, r.diverged_step, r.steps_done), run.params
            assert (s64.status, s64.diverged_step) == (r64.status, r64.diverged_step), run.params
            for table in ("curves", "layers", "histograms"):
                assert len(s.tables[table]) == len(r.tables[table]), (table, run.params)
            a, b = r.tables["curves"].loss.to_numpy(), s.tables["curves"].loss.to_numpy()
            assert (np.isfinite(a) == np.isfinite(b)).all(), run.params
            early = (s64.tables["curves"].step <= EXACT_STEPS).to_numpy()
            assert_same_in_float64(s64.tables["curves"].loss[early], r64.tables["curves"].loss[early], run.params)
            # Dead units must agree exactly; a value-level share may differ by a few values out of thousands that
            # sit on the threshold (a ReLU input of -1e-9 in one kernel and +1e-9 in the other).
            ls, lr = s.tables["layers"], r.tables["layers"]
            pd.testing.assert_series_equal(ls.dead_fraction, lr.dead_fraction, atol=1e-9)
            early = (s64.tables["layers"].step <= EXACT_STEPS).to_numpy()
            for col in ("saturated_fraction", "zero_fraction"):
                pd.testing.assert_series_equal(
                    s64.tables["layers"][col][early], r64.tables["layers"][col][early], atol=1e-9
                )
            ha, hb = r.tables["histograms"], s.tables["histograms"]
            assert (ha.nan == hb.nan).all() and (ha.inf == hb.inf).all()
            # Same initialization and data: at step 0 the histograms of the forward points agree but for the odd
            # value on a bin edge. (Gradients carry more float32 rounding, 1e-4 relative in a batch-norm backward:
            # they are compared in float64 below.)
            at0 = ((ha.step == 0) & ha.point.isin(POINTS)).to_numpy()
            assert_few_moved(ha[at0], hb[at0])
            # In float64 at step 0 (the same parameters), the gradient points, their automatic ranges and norms.
            # (Later, parameters that only rounding moves, as Adam moves a bias right before batch norm, can drift
            # 1e-8 apart, and gradients with them: tests/test_record.py checks the gradients of any parameters.)
            ha, hb = r64.tables["histograms"], s64.tables["histograms"]
            grad = ((ha.step == 0) & ha.point.isin(GRAD_POINTS)).to_numpy()
            for col in ("lo", "hi", "std", "min", "max"):
                assert_same_in_float64(hb[col][grad], ha[col][grad], (col, run.params))
            assert_few_moved(ha[grad], hb[grad])
            la, lb = r64.tables["layers"], s64.tables["layers"]
            at0 = (la.step == 0).to_numpy()
            for col in ("grad_norm", "backprop_norm"):
                assert_same_in_float64(lb[col][at0], la[col][at0], (col, run.params))


def assert_few_moved(ha: pd.DataFrame, hb: pd.DataFrame) -> None:
    """Histograms of (nearly) the same values: at most 0.1% of each one's values in another bin."""
    moved = [np.abs(np.subtract(x, y)).sum() for x, y in zip(ha.counts, hb.counts, strict=True)]
    assert (np.array(moved) / ha.n.to_numpy()).max(initial=0) <= 0.001


def test_seed_setting_same_divergence_and_first_steps():
    compare("morvan_tf23", ["seeds=[1, 2, 3]", "train.steps=4", "record.loss_every=1", "record.hist_every=2"])


def test_seed_setting_whole_batch_norm_runs():
    """All 251 steps of the tutorial's batch-norm runs, where plain SGD amplifies rounding the most."""
    compare("morvan_tf23", ["seeds=[1, 2, 3]", "grid.model.norm=[batch]"])


def test_dead_neurons_first_steps():
    compare(
        "dead_neurons",
        ["seeds=[1, 2, 3]", "train.lr=0.001", "train.steps=5", "record.loss_every=1", "record.hist_every=5"],
    )


def test_no_norm_runs_match_over_the_whole_run():
    compare("dead_neurons", ["seeds=[1, 2, 3]", "grid.model.norm=[none]", "train.lr=0.001", "train.steps=40"])


def test_adam_minibatches_shuffle_test_split_eval_mode():
    """Mini-batches in a new order each epoch (the last one partial), Adam, a test split, eval mode; 40 steps,
    past the epoch's end at 32."""
    overrides = ["train.steps=40", "model.bias=auto", "train.lr=0.003", "record.loss_every=2", "record.hist_every=20"]
    compare("morvan_pt504", [*overrides, "seeds=[1, 2]", "grid.model.norm=[none]"])


def test_batch_norm_running_statistics_in_eval_mode():
    """With batch norm, the eval-mode losses go through the running statistics, which amplify rounding."""
    overrides = ["train.steps=10", "model.bias=auto", "train.lr=0.003", "record.loss_every=1", "record.hist_every=5"]
    compare("morvan_pt504", [*overrides, "seeds=[1, 2]", "grid.model.norm=[batch]"])


def test_norms_over_the_channels_layer_rms_group():
    """Layer, RMS and group norm take their statistics over each sample's channels: no batch coupling, no running
    statistics. With Adam on mini-batches (the input left unnormalized: one value per sample)."""
    overrides = ["train.steps=30", "model.normalize_input=false", "record.loss_every=3", "record.hist_every=15"]
    compare("morvan_pt504", [*overrides, "seeds=[1, 2]", "grid.model.norm=[layer, rms, group]"])


def test_learning_rates_and_init_scales_vary_inside_a_stack():
    exp = load_experiment(
        "dead_neurons",
        [
            "seeds=[1, 2, 3]",
            "grid.model.norm=[none]",
            "grid.train.lr=[0.001, 0.002]",
            "grid.model.weight_init.std=[0.1, 0.2]",
        ],
    )
    groups = stack_groups(exp.runs)
    assert len(groups) == 2  # relu and tanh; lr, std and seed vary inside each
    compare(
        "dead_neurons", ["seeds=[1, 2, 3]", "grid.model.norm=[none]", "grid.train.lr=[0.001, 0.002]", "train.steps=30"]
    )


def test_classification_mlp_on_images():
    """The digits, flattened, cross-entropy and accuracy, Adam on shuffled mini-batches: init_scale's runs."""
    overrides = ["seeds=[1]", "grid.model.weight_init.std=[0.1, 0.464]", "train.epochs=null", "record.loss_every=5"]
    compare("init_scale", [*overrides, "train.steps=29", "record.hist_every=29", "grid.model.norm=[none]"])
    compare("init_scale", [*overrides, "record.hist_every=5", "train.steps=10", "grid.model.norm=[batch]"])


def test_what_the_written_out_kernel_cannot_train_goes_to_autograd():
    assert {kernel_for(r.config) for r in load_experiment("cnn_norms").runs} == {"autograd"}
    assert {kernel_for(r.config) for r in load_experiment("init_scale").runs} == {"written-out"}
    sn = load_experiment("dead_neurons", ["grid.model.norm=[switchable]"]).runs[0].config
    assert kernel_for(sn) == "autograd"
    with pytest.raises(ValueError, match="written-out kernel has"):
        kernel_for(sn, "written-out")


def test_cli_written_out_kernel_runs(tmp_path):
    from typer.testing import CliRunner

    from normbench.cli import app

    result = CliRunner().invoke(
        app,
        [
            "run",
            "dead_neurons",
            "--kernel",
            "written-out",
            "--set",
            "train.steps=20",
            "--set",
            "seeds=[1]",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 ok" in result.output


@pytest.mark.slow
def test_bench_runs(capsys):
    from rich.console import Console

    from normbench.bench import print_bench

    timings = print_bench(4, 20, 1, Console(), demo=False)
    assert len(timings) == 10 and all(t.rate > 0 for t in timings)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_written_out_backward_equals_autograd_in_float64(tiny_raw, write_config, task, mode):
    """Every derivative of the written-out kernel (activations, every norm it writes out, batch norm with batch or
    running statistics, the placements, the input norm, both losses) against autograd of the reference model, in
    float64; the loss against PyTorch's own cross-entropy and the squared error written plainly."""
    import copy

    import torch.nn.functional as F

    from normbench.engine.base import losses
    from normbench.engine.written_out import backward, forward, make_spec, reference_tensors, train_grads
    from normbench.nn.models import build_model
    from normbench.registry import ACTIVATIONS

    def loss_fn(pred, target):
        if task == "classification":
            return F.cross_entropy(pred, target)
        return (pred - target).square().sum(dim=1).mean()

    tiny_raw["grid"] = {
        "model.activation": sorted(ACTIVATIONS.names()),
        "model.norm": ["none", "batch", "batch_manual", "layer", "rms", "group"],
        "model.placement": ["before", "after"],
        "model.normalize_input": [True, False],
        "model.norm_affine": [True, False],
    }
    tiny_raw["seeds"] = [1]
    n, features, outputs = 24, 3, 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g, dtype=torch.float64)
    if task == "classification":
        y = torch.randint(0, outputs, (n,), generator=g)
    else:
        y = torch.randn(n, outputs, generator=g, dtype=torch.float64)
    x_cols = x.T[None].contiguous()
    y_cols = y[None] if task == "classification" else y.T[None].contiguous()
    for run in load_experiment(write_config(tiny_raw)).runs:
        models = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            model = build_model(run.config.model, (features,), outputs).double()
            for buf_name, buf in model.named_buffers():  # running statistics that are not the defaults
                if "running" in buf_name:
                    buf.copy_(torch.rand(buf.shape, generator=g, dtype=torch.float64) + 0.5)
            models.append(model)
        spec = make_spec(models[0], run.config, task == "classification")
        params = [reference_tensors(m)[0] for m in models]
        theta = torch.stack([spec.flatten({k: v[None] for k, v in p.items()})[0] for p in params]).detach()
        stats = {k: torch.stack([reference_tensors(m)[1][k] for m in models]) for k in reference_tensors(models[0])[1]}
        if mode == "train":
            loss, _, grad, _ = train_grads(spec, theta, x_cols, y_cols)
        else:
            p = spec.views(theta)
            out, tape, _ = forward(spec, p, x_cols, "eval", stats)
            loss, dout = losses(out, y_cols, spec.classification)
            grad = spec.flatten(backward(spec, p, tape, dout, "eval"))
        for j, model in enumerate(models):
            model.train(mode == "train")
            ref_loss = loss_fn(model(x), y)
            ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))
            as_params = copy.deepcopy(model)
            with torch.no_grad():
                for q, rg in zip(as_params.parameters(), ref_grads, strict=True):
                    q.copy_(rg)
            expected = spec.flatten({k: v[None] for k, v in reference_tensors(as_params)[0].items()})[0]
            torch.testing.assert_close(loss[j], ref_loss.detach(), rtol=1e-12, atol=1e-12, msg=str(run.params))
            torch.testing.assert_close(grad[j], expected, rtol=1e-9, atol=1e-11, msg=str(run.params))


def test_compiled_step_equals_the_eager_one(tiny_raw, write_config):
    """torch.compile fuses the step's elementwise work into C++ loops: the same numbers up to rounding."""
    tiny_raw["grid"] = {"model.norm": ["batch"], "model.activation": ["tanh"]}
    cfgs = [r.config for r in load_experiment(write_config(tiny_raw)).runs]
    eager, compiled = train_stack(cfgs), train_stack(cfgs, compile=True)
    eager64, compiled64 = (train_stack(cfgs, compile=c, dtype=torch.float64) for c in (False, True))
    for e, c, e64, c64 in zip(eager, compiled, eager64, compiled64, strict=True):
        assert (e.status, e.steps_done) == (c.status, c.steps_done)
        assert c.provenance["compiled"] and not e.provenance["compiled"]
        assert_same_in_float64(c64.tables["curves"].loss, e64.tables["curves"].loss)
        pd.testing.assert_series_equal(c.tables["layers"].saturated_fraction, e.tables["layers"].saturated_fraction)


def test_device_and_compile_options_are_checked(tmp_path):
    import torch
    from typer.testing import CliRunner

    from normbench.cli import app

    def run(*options: str):
        return CliRunner().invoke(app, ["run", "dead_neurons", "--out", str(tmp_path), *options])

    result = run("--compile", "--kernel", "autograd")
    assert result.exit_code == 2 and "--compile" in result.output and "written-out" in result.output
    if not torch.cuda.is_available():
        result = run("--device", "cuda")
        assert result.exit_code == 2 and "sees no CUDA device" in result.output
    assert not (tmp_path / "dead_neurons" / "runs.parquet").exists()
