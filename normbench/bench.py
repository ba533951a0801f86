"""`normbench bench`: the same grid trained several ways, in one invocation, timed side by side.

    plain      a per-run PyTorch loop as a user would write it: nn.Sequential, torch.optim.SGD, no recording;
               on one thread, and on PyTorch's default threads (every core)
    per-run    normbench's reference engine (train.train_run), recording on
    stacked    normbench's stacked engine (stacked.train_stacked), recording on: eager, eager without recording,
               compiled (torch.compile) the first time in the process (compilation included) and again (its
               compiled graphs reused), and compiled on one worker process per core (process start and
               compilation included: what `normbench run --engine stacked --compile --workers N` pays)

The workload is the seed's: a 7x30 MLP with batch norm and ReLU on 500 points, full batch, SGD 0.001, one run
per seed. Timings on a shared machine are noisy: compare the ratios of one invocation, not numbers across runs.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from normbench.config import Run, RunConfig, load_experiment
from normbench.data import build_dataset
from normbench.stacked import stack_groups, train_stacked
from normbench.train import single_thread, train_run

FLOP_PER_SAMPLE_LAYER = 2  # a multiply and an add per weight


@dataclass
class Timing:
    name: str
    seconds: float
    model_steps: int

    @property
    def rate(self) -> float:
        return self.model_steps / self.seconds


def bench_configs(runs: int, steps: int) -> list[RunConfig]:
    exp = load_experiment(
        "morvan_tf23",
        [
            f"seeds={list(range(1, runs + 1))}",
            f"train.steps={steps}",
            "grid.model.norm=[batch]",
            "grid.model.activation=[relu]",
        ],
    )
    return [r.config for r in exp.runs]


def runs_of(cfgs: list[RunConfig]) -> list[Run]:
    return [Run(c.run_id(), {"seed": c.seed}, c) for c in cfgs]


def plain_loop(cfgs: list[RunConfig]) -> None:
    """What a user would write: one model at a time, no recording."""
    data = build_dataset(cfgs[0].data)
    x, y = data.x_train, data.y_train
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        mc = cfg.model
        layers: list[nn.Module] = [nn.BatchNorm1d(1, eps=mc.norm_eps)]
        width_in = 1
        for _ in range(mc.depth):
            layers += [nn.Linear(width_in, mc.width), nn.BatchNorm1d(mc.width, eps=mc.norm_eps), nn.ReLU()]
            width_in = mc.width
        layers.append(nn.Linear(width_in, 1))
        net = nn.Sequential(*layers)
        for m in net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, mc.weight_init.std)
                nn.init.constant_(m.bias, mc.bias_init)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.train.lr)
        for _ in range(cfg.train.steps):
            loss = (net(x) - y).square().sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def flop_per_model_step(cfg: RunConfig, n: int) -> float:
    """Forward multiply-adds of the linear layers, times 3 for forward + backward (the backward does two)."""
    mc = cfg.model
    weights = 1 * mc.width + (mc.depth - 1) * mc.width * mc.width + mc.width
    return 3 * FLOP_PER_SAMPLE_LAYER * n * weights


def peak_matmul_gflops() -> float:
    """One core's float32 matmul rate on 1024x1024 matrices: the bound these models' FLOPs are measured against."""
    a = torch.randn(1024, 1024)
    with single_thread():
        a @ a
        t0 = time.perf_counter()
        for _ in range(10):
            a @ a
        return 10 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


def _stacked(cfgs: list[RunConfig], compile: bool = False) -> None:
    for group in stack_groups(runs_of(cfgs)):
        train_stacked([r.config for r in group], compile=compile)


def _warm_up(models: int) -> None:
    """A worker's initializer: compile the bench's structure once (a 1-step stack of the same shape)."""
    train_stacked(bench_configs(models, 1), compile=True)


def _stacked_on_workers(cfgs: list[RunConfig], workers: int, warm: bool = False) -> float | None:
    """The stacks spread over `workers` spawned processes of one thread each, as `normbench run --workers N
    --engine stacked --compile` does (sweep.train_unit). Cold: process start and compilation included (returns
    None: the caller's clock counts). Warm: every worker has started and compiled before the clock starts (returns
    the seconds of the training alone)."""
    from normbench.sweep import train_unit

    context = multiprocessing.get_context("spawn")
    units = [[r.config.model_dump(mode="json") for r in g] for g in stack_groups(runs_of(cfgs))]
    init = functools.partial(_warm_up, len(units[0])) if warm else None
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=init) as pool:
        if warm:  # a task runs only after its worker's initializer: wait until every worker has run one
            seen: set[int] = set()
            while len(seen) < workers:
                seen |= set(pool.map(_pid_after, [0.2] * workers))
        t0 = time.perf_counter()
        for outcomes in pool.map(functools.partial(train_unit, stacked=True, compile=True), units):
            assert all(hasattr(o, "tables") for o in outcomes), outcomes  # a RunFailure would say what broke
        return time.perf_counter() - t0 if warm else None


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)  # long enough that one worker cannot take every task
    return os.getpid()


def run_bench(runs: int = 64, steps: int = 251, repeat: int = 1, workers: int | None = None) -> list[Timing]:
    cfgs = bench_configs(runs, steps)
    no_record = [
        c.model_copy(update={"record": c.record.model_copy(update={"loss_every": steps, "hist_every": steps})})
        for c in cfgs
    ]
    workers = workers or os.cpu_count() or 1
    build_dataset(cfgs[0].data)  # load once, outside the timings
    # name, what (returning its own seconds, or None to be timed from outside), on one thread
    ways: list[tuple[str, Callable[[], float | None], bool]] = [
        ("plain PyTorch loop (no recording), 1 thread", lambda: plain_loop(cfgs), True),
        (f"plain PyTorch loop (no recording), {torch.get_num_threads()} threads", lambda: plain_loop(cfgs), False),
        ("normbench per-run engine", lambda: [train_run(c) for c in cfgs], True),
        ("normbench stacked engine", lambda: _stacked(cfgs), True),
        ("normbench stacked engine, recording off", lambda: _stacked(no_record), True),
        ("normbench stacked engine, compiled, first use in the process", lambda: _stacked(cfgs, True), True),
        ("normbench stacked engine, compiled, again (steady state)", lambda: _stacked(cfgs, True), True),
        (
            f"normbench stacked engine, compiled, {workers} worker processes (start and compile included)",
            lambda: _stacked_on_workers(cfgs, workers),
            False,
        ),
        (
            f"normbench stacked engine, compiled, {workers} worker processes, started and compiled before",
            lambda: _stacked_on_workers(cfgs, workers, warm=True),
            False,
        ),
    ]
    plain_loop(bench_configs(1, 5))  # warm up: the first models of a process pay for lazy initializations
    timings = []
    for name, fn, one_thread in ways:
        best = float("inf")
        for _ in range(repeat):
            threads = torch.get_num_threads()
            if one_thread:
                torch.set_num_threads(1)
            try:
                t0 = time.perf_counter()
                own = fn()
                best = min(best, own if isinstance(own, float) else time.perf_counter() - t0)
            finally:
                torch.set_num_threads(threads)
        timings.append(Timing(name, best, runs * steps))
    return timings


def print_bench(runs: int, steps: int, repeat: int, console, workers: int | None = None) -> list[Timing]:
    import platform

    from rich.table import Table

    peak = peak_matmul_gflops()
    timings = run_bench(runs, steps, repeat, workers)
    cfg = bench_configs(1, steps)[0]
    flop = flop_per_model_step(cfg, cfg.data.n or 500)
    plain = timings[0].rate
    table = Table(
        title=f"normbench bench: {runs} runs x {steps} steps, 7x30 MLP + BN + ReLU on 500 points "
        f"({flop / 1e6:.1f} MFLOP per model-step; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; one core multiplies 1024x1024 matrices at {peak:.1f} GFLOP/s)",
        title_justify="left",
    )
    for col in ("way", "seconds", "model-steps/s", "GFLOP/s", "vs plain loop (1 thread)"):
        table.add_column(col, justify="left" if col == "way" else "right")
    for t in timings:
        table.add_row(
            t.name, f"{t.seconds:.2f}", f"{t.rate:.0f}", f"{t.rate * flop / 1e9:.2f}", f"{t.rate / plain:.2f}x"
        )
    console.print(table)
    on, off = timings[3].seconds, timings[4].seconds
    console.print(f"recording overhead in the stacked engine (eager): {on / off - 1:.0%} of its training time")
    compile_s = timings[5].seconds - timings[6].seconds
    console.print(
        f"the best way is {max(timings, key=lambda t: t.rate).name}: {max(t.rate for t in timings) / plain:.2f}x"
    )
    console.print(f"compiling the stacked step took about {compile_s:.1f} s (first use minus steady state)")
    return timings
