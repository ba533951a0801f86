"""Training: one driver (driver.py) over two kernels (written_out.py, autograd.py), one optimizer (optim.py),
and the plan of how a grid is trained (plan.py)."""

from normbench.engine.driver import RunFailure, RunResult, resolve_device, total_steps, train_run, train_stack
from normbench.engine.plan import KERNELS, Plan, PlanError, Unit, kernel_for, make_plan, stack_groups

__all__ = [
    "KERNELS",
    "Plan",
    "PlanError",
    "RunFailure",
    "RunResult",
    "Unit",
    "kernel_for",
    "make_plan",
    "resolve_device",
    "stack_groups",
    "total_steps",
    "train_run",
    "train_stack",
]
