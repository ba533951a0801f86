"""Training: one driver (driver.py) over two kernels (written_out.py, autograd.py), one optimizer (optim.py),
and the plan of how a grid is trained (plan.py).

The names below are imported from their modules on first use: the optimizer registry (optim.py), which checking a
config looks up, does not bring the driver and the kernels with it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    **dict.fromkeys(("RunFailure", "RunResult", "resolve_device", "total_steps", "train_run", "train_stack"), "driver"),
    **dict.fromkeys(("KERNELS", "Plan", "PlanError", "Unit", "kernel_for", "make_plan", "stack_groups"), "plan"),
}

__all__ = [  # noqa: RUF022 - as _HOME lists them
    "RunFailure",
    "RunResult",
    "resolve_device",
    "total_steps",
    "train_run",
    "train_stack",
    "KERNELS",
    "Plan",
    "PlanError",
    "Unit",
    "kernel_for",
    "make_plan",
    "stack_groups",
]

if TYPE_CHECKING:
    from normbench.engine.driver import RunFailure, RunResult, resolve_device, total_steps, train_run, train_stack
    from normbench.engine.plan import KERNELS, Plan, PlanError, Unit, kernel_for, make_plan, stack_groups


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"normbench.engine.{_HOME[name]}"), name)
    raise AttributeError(f"module 'normbench.engine' has no attribute {name!r}")
