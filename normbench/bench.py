"""`normbench bench`: ways of training the same grid, timed side by side in one invocation, and the targets.

    plain      a per-run PyTorch loop as a user would write it over the ordinary models (build_model,
               torch.optim, no recording); on one thread, and on PyTorch's default threads (every core)
    floor      the matmuls of one step of a 16-model stack alone, on one thread: what these shapes cost in
               PyTorch's matmul kernels, a bound on any kernel that uses them
    kernels    the one driver over the autograd kernel and the written-out kernel, runs alone (stacks of 1) and in
               stacks of 16, eager, without recording, compiled (first use in the process and again), recording on
               otherwise, one thread
    default    `normbench run` with no options in a fresh process, as a user types it: start, plan (stacks, worker
               processes, compiling or not), training, recording and the results folder, all counted
    variants   the two ways an autograd kernel could compute M models: a loop of modules, torch.func's vmap

The grid is the tutorial's: a 7x30 MLP with batch norm and ReLU on 500 points, full batch, SGD 0.001, one run per
seed. A second table times the training of the three configs of `normbench demo dead-neurons` by `normbench
run`'s default path against the plain loop over the same 36 runs. Timings on a shared machine are noisy: compare
the ratios of one invocation, not numbers across invocations.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from normbench.config import Experiment, Run, RunConfig, load_experiment
from normbench.data import batches, build_dataset
from normbench.engine import stack_groups, total_steps, train_stack
from normbench.engine.driver import single_thread
from normbench.nn.models import build_model

FLOP_PER_SAMPLE_LAYER = 2  # a multiply and an add per weight
TARGETS = {"default": 4.0, "floor": 0.6, "demo": 1.0}


@dataclass
class Timing:
    name: str
    seconds: float
    model_steps: int

    @property
    def rate(self) -> float:
        return self.model_steps / self.seconds


def bench_overrides(runs: int, steps: int) -> list[str]:
    return [
        f"seeds={list(range(1, runs + 1))}",
        f"train.steps={steps}",
        "grid.model.norm=[batch]",
        "grid.model.activation=[relu]",
    ]


def bench_configs(runs: int, steps: int) -> list[RunConfig]:
    return [r.config for r in load_experiment("morvan_tf23", bench_overrides(runs, steps)).runs]


def runs_of(cfgs: list[RunConfig]) -> list[Run]:
    return [Run(c.run_id(), {"seed": c.seed}, c) for c in cfgs]


def torch_optimizer(params, t) -> torch.optim.Optimizer:
    """torch.optim's twin of each of normbench's optimizers (engine/optim.py), for the plain loop and the tests."""
    return {
        "sgd": lambda: torch.optim.SGD(params, lr=t.effective_lr(), weight_decay=t.weight_decay),
        "momentum": lambda: torch.optim.SGD(
            params, lr=t.effective_lr(), momentum=t.momentum, weight_decay=t.weight_decay
        ),
        "nesterov": lambda: torch.optim.SGD(
            params, lr=t.effective_lr(), momentum=t.momentum, nesterov=True, weight_decay=t.weight_decay
        ),
        "adam": lambda: torch.optim.Adam(params, lr=t.effective_lr(), betas=t.betas, weight_decay=t.weight_decay),
    }[t.optimizer]()


def plain_loop(cfgs: list[RunConfig], dtype=torch.float32) -> list[torch.nn.Module]:
    """What a user would write: one model at a time, torch.optim, no recording. Returns the trained models."""
    trained = []
    for cfg in cfgs:
        data = build_dataset(cfg.data)
        x, y = data.x_train.to(dtype), data.y_train
        y = y.to(dtype) if y.is_floating_point() else y
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, data.input_shape, data.out_features).to(dtype)
        opt = torch_optimizer(model.parameters(), cfg.train)
        stream = batches(x, y, cfg.train.minibatch(), cfg.data.shuffle, torch.Generator().manual_seed(cfg.seed))
        for _ in range(total_steps(cfg, data)):
            xb, yb = next(stream)
            out = model(xb)
            loss = F.cross_entropy(out, yb) if data.task == "classification" else (out - yb).square().sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained.append(model)
    return trained


def flop_per_model_step(cfg: RunConfig, n: int) -> float:
    """Forward multiply-adds of the linear layers, times 3 for forward + backward (the backward does two)."""
    mc = cfg.model
    weights = 1 * mc.width + (mc.depth - 1) * mc.width * mc.width + mc.width
    return 3 * FLOP_PER_SAMPLE_LAYER * n * weights


def matmul_floor(cfg: RunConfig, models: int = 16, reps: int = 20) -> float:
    """Model-steps/s if a step of the written-out kernel cost only its matmuls: per layer the forward W @ h, the
    weight gradient dz @ h^T and (but for the first layer) the input gradient W^T @ dz, for `models` models at
    once, with the shapes and transposes the kernel uses; one thread."""
    n = cfg.data.n or 500
    widths = [1] + [cfg.model.width] * cfg.model.depth + [1]
    ops: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        w, h, dz = torch.randn(models, b, a), torch.randn(models, a, n), torch.randn(models, b, n)
        ops += [(w, h), (dz, h.transpose(1, 2))] + ([(w.transpose(1, 2), dz)] if i > 0 else [])
    with single_thread():
        for a, b in ops:
            torch.matmul(a, b)
        t0 = time.perf_counter()
        for _ in range(reps):
            for a, b in ops:
                torch.matmul(a, b)
        return models * reps / (time.perf_counter() - t0)


def _stacks(cfgs: list[RunConfig], size: int, **options) -> None:
    for group in stack_groups(runs_of(cfgs), size):
        train_stack([r.config for r in group], **options)


def _normbench_run(overrides: list[str], config: str = "morvan_tf23") -> None:
    """`normbench run CONFIG --set ...` with no other option, in a fresh process, into a new folder."""
    with tempfile.TemporaryDirectory() as out:
        sets = [a for o in overrides for a in ("--set", o)]
        cmd = [sys.executable, "-m", "normbench", "run", config, *sets, "--out", out]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _time(fn: Callable[[], object], one_thread: bool, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        threads = torch.get_num_threads()
        if one_thread:
            torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        finally:
            torch.set_num_threads(threads)
    return best


def run_bench(runs: int = 64, steps: int = 251, repeat: int = 1) -> list[Timing]:
    cfgs = bench_configs(runs, steps)
    quiet = [
        c.model_copy(update={"record": c.record.model_copy(update={"loss_every": steps, "hist_every": steps})})
        for c in cfgs
    ]
    build_dataset(cfgs[0].data)  # load once, outside the timings
    # name, what, on one thread
    ways: list[tuple[str, Callable[[], object], bool]] = [
        ("plain PyTorch loop (no recording), 1 thread", lambda: plain_loop(cfgs), True),
        (f"plain PyTorch loop (no recording), {torch.get_num_threads()} threads", lambda: plain_loop(cfgs), False),
        ("autograd kernel, runs alone", lambda: _stacks(cfgs, 1, kernel="autograd"), True),
        ("autograd kernel, stacks of 16", lambda: _stacks(cfgs, 16, kernel="autograd"), True),
        ("written-out kernel, runs alone", lambda: _stacks(cfgs, 1), True),
        ("written-out kernel, stacks of 16", lambda: _stacks(cfgs, 16), True),
        ("written-out kernel, stacks of 16, recording off", lambda: _stacks(quiet, 16), True),
        (
            "written-out kernel, stacks of 16, compiled, first use in the process",
            lambda: _stacks(cfgs, 16, compile=True),
            True,
        ),
        (
            "written-out kernel, stacks of 16, compiled, again (steady state)",
            lambda: _stacks(cfgs, 16, compile=True),
            True,
        ),
        (
            "`normbench run` with no options (a fresh process, everything counted)",
            lambda: _normbench_run(bench_overrides(runs, steps)),
            False,
        ),
    ]
    plain_loop(bench_configs(1, 5))  # warm up: the first models of a process pay for lazy initializations
    return [Timing(name, _time(fn, one, repeat), runs * steps) for name, fn, one in ways]


def demo_timings(repeat: int = 1) -> tuple[Timing, Timing]:
    """The training of `normbench demo dead-neurons`: its three configs through `normbench run`'s default path
    (run_experiment with no options, in this process: recording and writing the results included) against the
    plain loop over the same runs."""
    from rich.console import Console

    from normbench.demo import DEMO_CONFIGS
    from normbench.sweep import run_experiment

    exps: list[Experiment] = [load_experiment(name) for name in DEMO_CONFIGS]
    cfgs = [r.config for e in exps for r in e.runs]
    model_steps = sum(total_steps(c, build_dataset(c.data)) for c in cfgs)

    def default_path() -> None:
        with tempfile.TemporaryDirectory() as out:
            for e in exps:
                run_experiment(e, Path(out), console=Console(quiet=True))

    plain = Timing(
        "plain PyTorch loop over the demo's runs, 1 thread", _time(lambda: plain_loop(cfgs), True, repeat), model_steps
    )
    ours = Timing(
        "the demo's training by `normbench run`'s default path", _time(default_path, False, repeat), model_steps
    )
    return plain, ours


def print_bench(runs: int, steps: int, repeat: int, console, demo: bool = True) -> list[Timing]:
    import platform

    from rich.table import Table

    cfg = bench_configs(1, steps)[0]
    floor = matmul_floor(cfg)
    timings = run_bench(runs, steps, repeat)
    flop = flop_per_model_step(cfg, cfg.data.n or 500)
    plain = timings[0].rate
    table = Table(
        title=f"normbench bench: {runs} runs x {steps} steps, 7x30 MLP + BN + ReLU on 500 points "
        f"({flop / 1e6:.1f} MFLOP per model-step; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores); the matmuls alone of a 16-model step allow {floor:.0f} model-steps/s on one core",
        title_justify="left",
    )
    for col in ("way", "seconds", "model-steps/s", "GFLOP/s", "vs plain loop (1 thread)"):
        table.add_column(col, justify="left" if col == "way" else "right")
    for t in timings:
        table.add_row(
            t.name, f"{t.seconds:.2f}", f"{t.rate:.0f}", f"{t.rate * flop / 1e9:.2f}", f"{t.rate / plain:.2f}x"
        )
    console.print(table)
    by = {t.name: t for t in timings}
    compiled = timings[8]
    rows = [
        ("`normbench run` with no options vs the plain loop", timings[-1].rate / plain, TARGETS["default"], "x"),
        ("compiled written-out kernel, one core, vs its matmul floor", compiled.rate / floor, TARGETS["floor"], "%"),
    ]
    if demo:
        plain_demo, ours_demo = demo_timings(repeat)
        rows.append(
            (
                "demo training: plain loop time / default path time",
                plain_demo.seconds / ours_demo.seconds,
                TARGETS["demo"],
                "x",
            )
        )
        console.print(f"{plain_demo.name}: {plain_demo.seconds:.1f} s; {ours_demo.name}: {ours_demo.seconds:.1f} s")
    targets = Table(title="targets", title_justify="left")
    for col in ("what", "measured", "target", "met"):
        targets.add_column(col)
    for what, value, target, unit in rows:
        fmt = (lambda v: f"{v:.0%}") if unit == "%" else (lambda v: f"{v:.2f}x")
        targets.add_row(what, fmt(value), f">= {fmt(target)}", "yes" if value >= target else "no")
    console.print(targets)
    on, off = (
        by["written-out kernel, stacks of 16"].seconds,
        by["written-out kernel, stacks of 16, recording off"].seconds,
    )
    console.print(f"recording costs {on / off - 1:.0%} of the written-out kernel's training time here")
    console.print(f"compiling took about {timings[7].seconds - timings[8].seconds:.1f} s (first use minus again)")
    variants = Table(
        title="autograd kernel: a loop of modules or torch.func's vmap (layer norm, 8 models, one thread)",
        title_justify="left",
    )
    for col in ("model, way", "model-steps/s"):
        variants.add_column(col)
    for config in ("cnn_norms", "morvan_tf23"):
        for t in autograd_variants(config):
            variants.add_row(t.name, f"{t.rate:.0f}")
    console.print(variants)
    return timings


def autograd_variants(config: str = "cnn_norms", models: int = 8, steps: int = 10) -> list[Timing]:
    """The two ways an autograd kernel could compute M models' gradients, with layer norm (no running statistics,
    so both apply as they are): a loop over the ordinary modules (what the autograd kernel does), and torch.func's
    vmap of one functional model over stacked parameters (functional_call). On `config`'s model and its first 50
    training samples (cnn_norms: the CNN on the digits; morvan_tf23: the 7x30 MLP)."""
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    exp = load_experiment(
        config,
        [
            f"seeds={list(range(1, models + 1))}",
            "grid.model.norm=[layer]",
            "model.normalize_input=false",
            "grid.model.activation=[relu]",
        ],
    )
    cfgs = [r.config for r in exp.runs]
    data = build_dataset(cfgs[0].data)
    x, y = data.x_train[:50], data.y_train[:50]
    classification = data.task == "classification"
    mods = []
    for c in cfgs:
        torch.manual_seed(c.seed)
        mods.append(build_model(c.model, data.input_shape, data.out_features))
    params, buffers = stack_module_state(mods)
    base = mods[0]

    def loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y) if classification else (out - y).square().sum(1).mean()

    def loss_of(p, b):
        return loss(functional_call(base, (p, b), (x,)))

    vmapped = vmap(grad_and_value(loss_of))

    def loop() -> None:
        for m in mods:
            grads = torch.autograd.grad(loss(m(x)), list(m.parameters()))
            assert grads

    def func() -> None:
        vmapped(params, buffers)

    timings = []
    with single_thread():
        for name, fn in (("loop of modules", loop), ("torch.func vmap", func)):
            fn()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            timings.append(Timing(f"{config}, {name}", time.perf_counter() - t0, models * steps))
    return timings
