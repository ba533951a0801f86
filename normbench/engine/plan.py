"""How a grid is trained: which kernel each run gets, which runs stack, how many worker processes, whether to
compile. With no options `normbench run` takes the fastest way this machine supports (measured in
docs/benchmarks.md):

- kernel: the written-out kernel where it supports the config (MLPs with the norms it writes out), else autograd;
- stacks: runs of one structure (everything but seed, learning rate, init scale and bias init) train together,
  at most 16 per stack (larger stacks of the tutorial's MLP were slower per model here: their activations fall out
  of a core's 1 MB cache);
- workers: one process per core when the grid is large enough to pay for starting them (about 2 s each), i.e.
  at least WORKERS_FROM model-steps in at least two stacks; else the stacks train in this process;
- compile: torch.compile of the written-out step when a worker's share of one structure is at least
  COMPILE_FROM model-steps (compiling costs 2-5 s per structure and process with a warm cache, 15-30 s cold,
  and saves about 0.3 ms per model-step) and a C++ compiler is there. The compiled code is cached on disk
  (COMPILE_CACHE), so a second invocation does not compile again.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from normbench.engine.autograd import AutogradKernel
from normbench.engine.written_out import WrittenOutKernel, unsupported
from normbench.errors import UserError

if TYPE_CHECKING:
    from normbench.config import Run, RunConfig

KERNELS = {"written-out": WrittenOutKernel, "autograd": AutogradKernel}
MAX_STACK = 16
WORKERS_FROM = 10_000
COMPILE_FROM = 40_000
COMPILE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "normbench" / "torchinductor"


class PlanError(UserError):
    """A way of training that cannot be had here (one line, for the user)."""


def kernel_for(cfg: RunConfig, requested: str = "auto") -> str:
    """The kernel that trains `cfg`: the requested one, or with 'auto' the written-out kernel where it can."""
    if requested == "auto":
        return "autograd" if unsupported(cfg) else "written-out"
    if requested not in KERNELS:
        raise PlanError(f"unknown kernel {requested!r}; choose from: auto, {', '.join(KERNELS)}")
    if requested == "written-out" and (why := unsupported(cfg)):
        raise PlanError(f"--kernel written-out cannot train {why}; use --kernel auto or autograd")
    return requested


def structure_key(cfg: RunConfig) -> str:
    """Everything but what may vary inside a stack: seed, lr, init scale and bias init."""
    d = cfg.model_dump(mode="json")
    d.pop("seed")
    d["train"].pop("lr")
    d["model"]["weight_init"].pop("std")
    d["model"].pop("bias_init")
    return repr(sorted(d.items()))


def stack_groups(runs: list[Run], max_models: int = MAX_STACK) -> list[list[Run]]:
    """Runs grouped by structure, in stacks of at most `max_models` (1: every run alone)."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[structure_key(run.config)].append(run)
    return [g[i : i + max_models] for g in groups.values() for i in range(0, len(g), max_models)]


@dataclass(frozen=True)
class Unit:
    """Runs trained together by one call of the driver: the thing sent to a worker."""

    runs: list[Run]
    kernel: str
    compile: bool


@dataclass(frozen=True)
class Plan:
    units: list[Unit]
    workers: int

    def describe(self) -> str:
        kernels = sorted({u.kernel + (" compiled" if u.compile else "") for u in self.units})
        sizes = [len(u.runs) for u in self.units]
        where = f"{self.workers} worker processes" if self.workers > 1 else "this process"
        stacks = f"{len(sizes)} stacks of {min(sizes)}-{max(sizes)}" if sizes else "nothing"
        return f"{stacks}, {' + '.join(kernels) or 'no'} kernel, on {where}"


def make_plan(
    runs: list[Run],
    steps_of: dict[str, int],
    *,
    kernel: str = "auto",
    stack: int | None = None,
    workers: int | None = None,
    compile: bool | None = None,
    cores: int | None = None,
    device_type: str = "cpu",
) -> Plan:
    """`steps_of`: run id -> training steps. None for stack, workers or compile: decide as the module docstring
    says."""
    cores = cores or os.cpu_count() or 1
    groups = stack_groups(runs, stack or MAX_STACK)
    work = sum(steps_of[r.run_id] for r in runs)
    if workers is None:
        workers = min(cores, len(groups)) if work >= WORKERS_FROM and len(groups) > 1 else 1
    structures: dict[str, int] = defaultdict(int)  # model-steps per structure
    keys = [structure_key(g[0].config) for g in groups]
    for key, g in zip(keys, groups, strict=True):
        structures[key] += sum(steps_of[r.run_id] for r in g)
    units = []
    for key, g in zip(keys, groups, strict=True):
        k = kernel_for(g[0].config, kernel)
        if compile is None:
            share = structures[key] / max(1, min(workers, len(groups)))
            c = k == "written-out" and share >= COMPILE_FROM and has_compiler()
        else:
            c = compile and k == "written-out"
        units.append(Unit(g, k, c))
    if compile and not any(u.compile for u in units):
        raise PlanError("--compile compiles the written-out kernel's step; no run of this grid trains on it")
    if any(u.compile for u in units):
        if device_type == "cpu" and not has_compiler():
            raise PlanError("--compile on the CPU needs a C++ compiler on the PATH (g++ or clang++)")
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(COMPILE_CACHE))  # workers inherit it
    return Plan(units, workers)


def memory_needed(cfg: RunConfig, input_shape: tuple[int, ...], n_samples: int, outputs: int) -> int:
    """Bytes one run needs at least, in float32: its parameters four times (the values, their gradient and two
    optimizer buffers) and, for the largest pass over `n_samples` samples (the recording's, on a whole split),
    each hidden layer's values at its three recorded points and the autograd copies of them (about six per
    layer). An estimate from below: if it does not fit, the run cannot."""
    mc = cfg.model
    if mc.name in ("rnn", "lstm", "transformer"):  # (T, C + 1) inputs; per step of a layer: 4 width gates or MLP
        steps, width = input_shape[0], mc.width
        per_layer = 4 * width * width * (2 if mc.name == "lstm" else 3)
        params = input_shape[1] * 4 * width + mc.depth * per_layer + width * outputs + steps * width
        values = steps * mc.depth * 4 * width
    elif mc.name == "mlp":
        widths = [math.prod(input_shape)] + [mc.width] * mc.depth
        params = sum(a * b + 3 * b for a, b in itertools.pairwise(widths)) + widths[-1] * outputs + outputs
        values = sum(widths[1:])
    else:
        channels, (h, w) = [input_shape[0], *mc.channels], input_shape[1:]
        params, values = 0, 0
        for c_in, c_out in itertools.pairwise(channels):
            params += c_in * c_out * mc.kernel**2 + 3 * c_out
            values += c_out * h * w
            h, w = (h // 2, w // 2) if mc.pool != "none" else (h, w)
        params += channels[-1] * h * w * outputs + outputs
    return 4 * (4 * params + 6 * n_samples * values)


def memory_available() -> int:
    """Bytes this machine can still give a process (MemAvailable), or its physical memory where that is unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def has_compiler() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))
