"""The training driver: everything a run does over time, for a stack of M >= 1 runs of one structure.

    results = train_stack(cfgs)                          # one RunResult per config; a run alone is M = 1
    results = train_stack(cfgs, kernel="autograd")       # force a kernel (default: plan.kernel_for)
    results = train_stack(cfgs, compile=True)            # the written-out kernel's step through torch.compile

The driver owns the batch order of each run, the step schedule, recording (one Recorder), divergence
detection and freezing, the optimizer (one FlatOptimizer) and provenance; how a step is computed sits behind
the kernel interface (base.py): the written-out MLP kernel or the autograd kernel.

Steps count parameter updates: step s is the state after s updates, step 0 the initialization. Losses are
recorded at s % record.loss_every == 0, histograms and layer statistics at s % record.hist_every == 0, both also
at the last step; internal covariate shift (Recorder.ics) at s % record.ics_every == 0 when set, before update s+1,
with the update it is about to apply; the loss landscape along the gradient (Recorder.landscape) likewise at
s % record.landscape_every == 0, on the step's batch; the losses with recomputed statistics (Recorder.precise) at the
last step when record.precise_bn. A run whose training loss becomes NaN or inf at step s is recorded at s, with
status 'diverged' and diverged_step s, then frozen: the other runs of its stack go on.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from normbench.data import Dataset, batches, build_dataset, steps_per_epoch
from normbench.engine.base import Kernel, reference_models
from normbench.engine.optim import FlatOptimizer
from normbench.engine.plan import KERNELS, kernel_for
from normbench.engine.recorder import Recorder

if TYPE_CHECKING:
    from normbench.config import RunConfig


@dataclass
class RunResult:
    status: str  # 'ok' | 'diverged'
    diverged_step: int | None
    steps_done: int  # updates applied
    wall_time_s: float  # the stack's time divided by its size
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # curves, layers, histograms
    provenance: dict[str, Any] = field(default_factory=dict)  # kernel, device, dtype, threads, torch, stack


@dataclass
class RunFailure:
    """An exception inside one run, as data (it may come back from another process or machine)."""

    error: str  # 'TypeName: message'
    traceback: str

    @classmethod
    def from_exception(cls, e: BaseException) -> RunFailure:
        return cls(f"{type(e).__name__}: {e}", "".join(traceback.format_exception(e)))


def total_steps(cfg: RunConfig, data: Dataset) -> int:
    """train.steps, or train.epochs passes over the training set."""
    if cfg.train.steps is not None:
        return cfg.train.steps
    return cfg.train.epochs * steps_per_epoch(len(data.x_train), cfg.train.minibatch())


@contextmanager
def single_thread():
    """Train on one thread: every run is then bitwise identical whatever the executor (the summation order of
    float32 reductions depends on the thread count), and parallelism comes from running several stacks at once
    (worker processes, Dask). These models gain little from intra-op threads (a morvan_tf23 run took 0.7-0.9 s
    on 1 or 2 threads), and with another process busy on the machine 2 threads were 3x slower than 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str) -> torch.device:
    """'auto' is the GPU when PyTorch sees one, else the CPU; asking for 'cuda' without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: PyTorch {torch.__version__} sees no CUDA device on this machine")
    return torch.device(name)


def train_stack(
    cfgs: list[RunConfig],
    on_step: Callable[[int], None] | None = None,
    *,
    kernel: str = "auto",
    compile: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[RunResult]:
    """Train runs of one structure together (plan.stack_groups makes such stacks); one RunResult per config.
    `dtype` float64 trains in double precision: the exact-arithmetic reference the tests hold float32 against."""
    with single_thread():
        return Training(cfgs, kernel_for(cfgs[0], kernel), compile, torch.device(device), dtype).run(on_step)


def train_run(cfg: RunConfig, on_step: Callable[[int], None] | None = None, **options: Any) -> RunResult:
    """One run alone: a stack of one."""
    return train_stack([cfg], on_step, **options)[0]


class Training:
    def __init__(self, cfgs: list[RunConfig], kernel: str, compile: bool, device: torch.device, dtype=torch.float32):
        self.t0 = time.perf_counter()
        self.cfgs, cfg = cfgs, cfgs[0]
        self.data = data = build_dataset(cfg.data)
        self.dtype = dtype
        # Initialized on the CPU in float32, as every kernel starts; then converted.
        models = [m.to(dtype) for m in reference_models(cfgs, data)]
        classification = data.task == "classification"
        self.kernel: Kernel = KERNELS[kernel](models, cfgs, classification, device, compile)
        self.opt = FlatOptimizer(cfgs, device, self.kernel.theta.dtype)
        self.device = device
        self.steps = total_steps(cfg, data)
        size = cfg.train.minibatch()
        self.full_batch = (size is None or size >= len(data.x_train)) and not cfg.data.shuffle  # as data.batches
        names = ["train"] + (["test"] if data.x_test is not None else [])
        self.splits = {name: self.kernel.columns(*self._shared(*data.split(name))) for name in names}
        self.rec = Recorder(cfgs, self.kernel, self.splits)
        self.provenance = {
            "kernel": self.kernel.name,
            "compiled": bool(compile),
            "device": str(device),
            "dtype": str(self.kernel.theta.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "stack": len(cfgs),
        }

    def _shared(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples every model sees: a leading axis of 1."""
        return self._on_device(x[None], y[None])

    def _on_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.to(self.device, self.dtype) if y.is_floating_point() else y.to(self.device)
        return x.to(self.device, self.dtype), y

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) of every step, in the kernel's layout: each run's samples in the order data.batches gives it."""
        if self.full_batch:  # the tutorial's setting: the same data every step, no indexing
            while True:
                yield self.splits["train"]
        cfg, data = self.cfgs[0], self.data
        x, y = self._on_device(data.x_train, data.y_train)
        every = torch.arange(len(x))
        orders = [
            batches(every, every, cfg.train.minibatch(), cfg.data.shuffle, torch.Generator().manual_seed(c.seed))
            for c in self.cfgs
        ]
        while True:
            idx = torch.stack([next(o)[0] for o in orders]).to(self.device)  # (M, B)
            yield self.kernel.columns(x[idx], y[idx])

    def _precise_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of each run's batches, in the order its training's first epoch took them (shuffled where
        training shuffles: batches of sorted data in order would each cover a narrow slice of it), one at a time:
        what precise BN averages the statistics of."""
        return itertools.islice(
            self._batches(), steps_per_epoch(len(self.data.x_train), self.cfgs[0].train.minibatch())
        )

    def run(self, on_step: Callable[[int], None] | None) -> list[RunResult]:
        rc, rec, kernel = self.cfgs[0].record, self.rec, self.kernel
        active = torch.ones(len(self.cfgs), dtype=torch.bool, device=self.device)
        diverged: list[int | None] = [None] * len(self.cfgs)
        stream = self._batches()
        step = 0
        for step in range(self.steps + 1):
            alive = active.nonzero().flatten().tolist()
            if step == self.steps:
                rec.losses(step, alive)
                rec.layers(step, alive)
                if rc.precise_bn:
                    rec.precise(step, alive, self._precise_batches())
                break
            batch = next(stream)
            loss, correct = kernel.step(*batch)  # nothing is changed yet but the held-back statistics
            # On the full batch, the training split's train-mode loss at this step is this very loss.
            known = (loss, correct) if self.full_batch else None
            if step % rc.loss_every == 0:
                rec.losses(step, alive, known)
            if step % rc.hist_every == 0:
                rec.layers(step, alive)
            bad = active & ~torch.isfinite(loss)
            if bad.any():  # these runs diverge at this step: recorded here (once), then frozen
                newly = bad.nonzero().flatten().tolist()
                for j in newly:
                    diverged[j] = step
                rec.losses(step, newly, known)
                rec.layers(step, newly)
                active &= ~bad
                if not active.any():
                    break
            if rc.ics_every is not None and step % rc.ics_every == 0:  # before the step: its update, not applied
                update = self.opt.peek(kernel.theta, kernel.grad, active)
                rec.ics(step, active.nonzero().flatten().tolist(), *batch, update)
            if rc.landscape_every is not None and step % rc.landscape_every == 0:
                rec.landscape(step, active.nonzero().flatten().tolist(), *batch, loss, self.opt.next_lr())
            kernel.commit(active)
            self.opt.step(kernel.theta, kernel.grad, active)
            if on_step is not None:
                on_step(step + 1)
        return self._results(step, diverged)

    def _results(self, step: int, diverged: list[int | None]) -> list[RunResult]:
        wall = (time.perf_counter() - self.t0) / len(self.cfgs)
        results = []
        for j, d in enumerate(diverged):
            status, done = ("diverged", d) if d is not None else ("ok", step)
            results.append(RunResult(status, d, done, wall, self.rec.tables(j), dict(self.provenance)))
        return results
