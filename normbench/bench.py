"""`normbench bench`: the same grid trained three ways, in one process, timed side by side.

    plain     a per-run PyTorch loop as a user would write it: nn.Sequential, torch.optim.SGD, no recording
    per-run   normbench's reference engine (train.train_run), recording on
    stacked   normbench's stacked engine (stacked.train_stacked), recording on, and again with recording off

The workload is the seed's: a 7x30 MLP with batch norm and ReLU on 500 points, full batch, SGD 0.001, one run
per seed. Timings on a shared machine are noisy: compare the ratios of one invocation, not numbers across runs.
"""

from __future__ import annotations

import time
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


def run_bench(runs: int = 64, steps: int = 251, repeat: int = 1) -> list[Timing]:
    cfgs = bench_configs(runs, steps)
    no_record = [
        c.model_copy(update={"record": c.record.model_copy(update={"loss_every": steps, "hist_every": steps})})
        for c in cfgs
    ]
    build_dataset(cfgs[0].data)  # load once, outside the timings
    timings = []
    for name, fn in (
        ("plain PyTorch loop (no recording)", lambda: plain_loop(cfgs)),
        ("normbench per-run engine", lambda: [train_run(c) for c in cfgs]),
        (
            "normbench stacked engine",
            lambda: [train_stacked([r.config for r in g]) for g in stack_groups(runs_of(cfgs))],
        ),
        (
            "normbench stacked engine, recording off",
            lambda: [train_stacked([r.config for r in g]) for g in stack_groups(runs_of(no_record))],
        ),
    ):
        best = float("inf")
        for _ in range(repeat):
            with single_thread():
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
        timings.append(Timing(name, best, runs * steps))
    return timings


def print_bench(runs: int, steps: int, repeat: int, console) -> list[Timing]:
    import platform

    from rich.table import Table

    timings = run_bench(runs, steps, repeat)
    cfg = bench_configs(1, steps)[0]
    flop = flop_per_model_step(cfg, cfg.data.n or 500)
    plain = timings[0].rate
    table = Table(
        title=f"normbench bench: {runs} runs x {steps} steps, 7x30 MLP + BN + ReLU on 500 points, 1 thread "
        f"({flop / 1e6:.1f} MFLOP per model-step; {platform.processor() or platform.machine()})",
        title_justify="left",
    )
    for col in ("way", "seconds", "model-steps/s", "GFLOP/s", "vs plain loop"):
        table.add_column(col, justify="left" if col == "way" else "right")
    for t in timings:
        table.add_row(
            t.name, f"{t.seconds:.2f}", f"{t.rate:.0f}", f"{t.rate * flop / 1e9:.2f}", f"{t.rate / plain:.2f}x"
        )
    console.print(table)
    on, off = timings[2].seconds, timings[3].seconds
    console.print(f"recording overhead in the stacked engine: {on / off - 1:.0%} of its training time")
    return timings
