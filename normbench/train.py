"""Training one run, written out in full: the reference engine.

    result = train_run(run_config)          # RunResult(status='ok'|'diverged', diverged_step, tables, ...)

Steps count parameter updates: step s is the state after s updates, step 0 the initialization. Losses are
recorded at s % record.loss_every == 0, histograms and layer statistics at s % record.hist_every == 0, both also
at the last step. A run whose training loss becomes NaN or inf at step s stops there with status 'diverged'
and diverged_step s, after recording everything at s (so the NaN shows up in the tables and the figures).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from normbench.data import Dataset, batches, build_dataset, steps_per_epoch
from normbench.models import build_model
from normbench.record import Recorder, loss_fn
from normbench.registry import Registry

if TYPE_CHECKING:
    from normbench.config import RunConfig, TrainConfig

Params = Iterable[torch.nn.Parameter]

OPTIMIZERS: Registry[Callable[[Params, TrainConfig], torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("sgd", aliases=("gd",), help="plain (stochastic) gradient descent, as the seed")(
    lambda p, c: torch.optim.SGD(p, lr=c.effective_lr(), weight_decay=c.weight_decay)
)
OPTIMIZERS.register("momentum", help="SGD with heavy-ball momentum (train.momentum)")(
    lambda p, c: torch.optim.SGD(p, lr=c.effective_lr(), momentum=c.momentum, weight_decay=c.weight_decay)
)
OPTIMIZERS.register("nesterov", help="SGD with Nesterov momentum (train.momentum)")(
    lambda p, c: torch.optim.SGD(
        p, lr=c.effective_lr(), momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay
    )
)
OPTIMIZERS.register("adam", help="Adam (train.betas)")(
    lambda p, c: torch.optim.Adam(p, lr=c.effective_lr(), betas=c.betas, weight_decay=c.weight_decay)
)


@dataclass
class RunResult:
    status: str  # 'ok' | 'diverged'
    diverged_step: int | None
    steps_done: int  # updates applied
    wall_time_s: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # curves, layers, histograms


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
    batch_size = None if cfg.train.batch_size == "full" else cfg.train.batch_size
    return cfg.train.epochs * steps_per_epoch(len(data.x_train), batch_size)


@contextmanager
def single_thread():
    """Train on one thread: every run is then bitwise identical whatever the executor (the summation order of
    float32 reductions depends on the thread count), and parallelism comes from running several runs at once
    (--workers, Dask). These models gain little from intra-op threads (measured on a quiet 2-core machine: a
    morvan_tf23 run 0.7-0.9 s on 1 or 2 threads, a cnn_norms run 2.1-2.2 s vs 1.8-2.0 s), and with another
    process busy on the machine 2 threads were 3x slower than 1."""
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


def train_run(
    cfg: RunConfig, on_step: Callable[[int], None] | None = None, device: str | torch.device = "cpu"
) -> RunResult:
    with single_thread():
        return _train(cfg, on_step, torch.device(device))


def _train(cfg: RunConfig, on_step: Callable[[int], None] | None, device: torch.device) -> RunResult:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = build_dataset(cfg.data).to(device)
    model = build_model(cfg.model, data.input_shape, data.out_features).to(device)  # initialized on the CPU
    optimizer = OPTIMIZERS.get(cfg.train.optimizer)(model.parameters(), cfg.train)
    batch_size = None if cfg.train.batch_size == "full" else cfg.train.batch_size
    stream = batches(data.x_train, data.y_train, batch_size, cfg.data.shuffle, torch.Generator().manual_seed(cfg.seed))
    rec = Recorder(cfg, model, data)
    rc, steps = cfg.record, total_steps(cfg, data)

    status, diverged_step, step = "ok", None, 0
    for step in range(steps + 1):
        if step % rc.loss_every == 0 or step == steps:
            rec.losses(step)
        if step % rc.hist_every == 0 or step == steps:
            rec.layers(step)
        if step == steps:
            break
        xb, yb = next(stream)
        model.train()
        loss = loss_fn(model(xb), yb)
        if not torch.isfinite(loss):
            status, diverged_step = "diverged", step
            rec.losses(step)
            rec.layers(step)
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1)

    tables = {name: pd.DataFrame(rows) for name, rows in rec.rows.items()}
    return RunResult(status, diverged_step, step, time.perf_counter() - t0, tables)
