"""Results for other tools: `normbench export DIR --tensorboard` writes every run as a TensorBoard run.

    export_tensorboard(Path("results/morvan_tf23"), Path("tensorboard"))
    # -> tensorboard/morvan_tf23/<run label>/events.out.tfevents.*  (view: tensorboard --logdir tensorboard)

Each finished run (ok or diverged) becomes LOGDIR/<experiment>/<label>, its label made of its grid values
(`norm=batch,activation=relu,seed=1`), with:

- scalars `loss/<split>/<mode>_mode` and `accuracy/<split>/<mode>_mode` from curves.parquet;
- scalars `<column>/layer<i>` for every numeric column of layers.parquet (dead_fraction, grad_norm, ...);
- with record.landscape_every, scalars `landscape/loss_range`, `landscape/grad_change`, `landscape/beta`
  (views.summary.landscape_summary of landscape.parquet);
- for every (point, layer) of histograms.parquet, whatever the points are: a histogram `<point>/layer<i>` and
  the scalars `<point>/nan/layer<i>`, `<point>/inf/layer<i>` (counts), `<point>/out_of_range_share/layer<i>`
  ((below + above) / n), `<point>/mean/layer<i>` and `<point>/std/layer<i>`;
- scalars `final/<name>` at the run's last step: its final numbers as every command reads them (finals.py:
  final_train_loss, final_test_loss, ..., dead_fraction and saturated_fraction as the mean over hidden layers;
  a diverged run's losses +inf); the numbers a run does not have are left out;
- a text `run` with its status, divergence step, grid values (and, for a failed run, its error).

A failed run has no tables: only its text. Runs not trained yet are left out.

TensorBoard stores scalars as float32: what it shows is each stored float64 rounded to float32. A series that
is NaN throughout a run (accuracy in regression, saturation of ReLU, switchable-norm weights of another norm) is
left out. Histogram buckets are the stored bins (TensorBoard's `bucket_limit` is a bucket's right edge); the
finite values outside [lo, hi] are one more bucket on each side, reaching to the smallest / largest finite value,
so the buckets of a histogram add up to every finite value: sum(counts) + below + above.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normbench.errors import UserError, is_disk_full
from normbench.finals import applicable, per_run
from normbench.labels import run_folder_names
from normbench.results import FINISHED, experiment_axes, load_runs, load_table
from normbench.store import remove_stale, replace_dir

INSTALL_HINT = "TensorBoard export needs the tensorboard package: pip install 'normbench[tensorboard]'"
EVENT_FILE_PREFIX = "events.out.tfevents."
TEXT_TAG = "run"  # TensorBoard shows it as run/text_summary


class ExportError(UserError):
    """An export that cannot be done; the message says why in one line."""


@dataclass
class ExportReport:
    path: Path  # LOGDIR/<experiment>
    exported: int  # runs written with their tables (ok or diverged)
    failed: int  # failed runs, written as their text only
    missing: int  # runs of the grid not trained yet, left out


def summary_writer_class() -> type:
    """torch's SummaryWriter, or ExportError with the install hint when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ExportError(INSTALL_HINT) from None
    return SummaryWriter


def export_tensorboard(exp_dir: Path, logdir: Path) -> ExportReport:
    """Write every run of the experiment in `exp_dir` to LOGDIR/<experiment>/<label>/, replacing what an earlier
    export wrote there (so exporting twice never doubles a curve)."""
    writer_class = summary_writer_class()
    runs = load_runs(exp_dir)
    axes = [a for a in experiment_axes(exp_dir) if a in runs.columns]
    labels = run_labels(runs, axes)
    finals = per_run(runs)
    finals = finals[applicable(finals)]
    target = Path(logdir) / exp_dir.name
    _check_replaceable(target)
    remove_stale(Path(logdir), exp_dir.name)
    tmp = Path(logdir) / f".tmp-{exp_dir.name}-{os.getpid()}"
    thread_errors: list[BaseException] = []
    hook = threading.excepthook
    # TensorBoard writes its event files from a thread of its own: what fails there (a full disk) is recorded and
    # said in the one line below, not printed as the thread's traceback.
    threading.excepthook = lambda args: thread_errors.append(args.exc_value)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        exported = failed = 0
        for i, row in zip(runs.index, runs.to_dict("records"), strict=True):
            status = row["status"]
            if status not in (*FINISHED, "failed"):
                continue
            with writer_class(log_dir=str(tmp / labels[row["run_id"]])) as writer:
                writer.add_text(TEXT_TAG, _run_text(exp_dir.name, row, axes), global_step=0)
                if status == "failed":
                    failed += 1
                    continue
                rid = [row["run_id"]]
                _write_curves(writer, load_table(exp_dir, "curves", rid))
                _write_layers(writer, load_table(exp_dir, "layers", rid))
                _write_histograms(writer, load_table(exp_dir, "histograms", rid))
                _write_landscape(writer, load_table(exp_dir, "landscape", rid))
                _write_finals(writer, finals.loc[i], int(row["steps_done"]))
                exported += 1
        for e in thread_errors:
            raise e
        replace_dir(tmp, target)
    except OSError as e:
        raise ExportError(_write_problem(target, e)) from None
    except Exception:
        if not thread_errors:
            raise
        raise ExportError(_write_problem(target, thread_errors[0])) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        threading.excepthook = hook
    return ExportReport(target, exported, failed, int((~runs.status.isin((*FINISHED, "failed"))).sum()))


def _write_problem(target: Path, e: BaseException) -> str:
    """One line for a failed export; the earlier export in `target` is left as it was."""
    if is_disk_full(e):
        return f"disk full writing {target}; the earlier export there (if any) is left as it was"
    return f"cannot write {target}: {getattr(e, 'strerror', None) or e}"


def run_labels(runs: pd.DataFrame, axes: list[str]) -> dict[str, str]:
    """run_id -> folder name (labels.run_folder_names)."""
    return run_folder_names(runs.to_dict("records"), axes)


# -- the tables -----------------------------------------------------------------------------------------------


def _write_curves(writer: Any, curves: pd.DataFrame) -> None:
    if curves.empty:
        return
    for (split, mode), g in curves.groupby(["split", "mode"], sort=True):
        for metric in ("loss", "accuracy"):
            _scalars(writer, f"{metric}/{split}/{mode}_mode", g.step, g[metric])


def _write_layers(writer: Any, layers: pd.DataFrame) -> None:
    if layers.empty:
        return
    columns = [c for c in numeric_columns(layers) if c not in ("step", "layer") and layers[c].notna().any()]
    for layer, g in layers.groupby("layer", sort=True):
        for col in columns:
            _scalars(writer, f"{col}/layer{layer}", g.step, g[col], skip_all_nan=False)


def _write_landscape(writer: Any, landscape: pd.DataFrame) -> None:
    if landscape.empty:
        return
    from normbench.views.summary import LANDSCAPE, landscape_summary

    summary = landscape_summary(landscape)
    for col in LANDSCAPE:
        _scalars(writer, f"landscape/{col}", summary.step, summary[col])


def _write_finals(writer: Any, values: pd.Series, step: int) -> None:
    for name, value in values.items():
        if not math.isnan(value):
            writer.add_scalar(f"final/{name}", float(value), global_step=step)


def _write_histograms(writer: Any, hists: pd.DataFrame) -> None:
    if hists.empty:
        return
    hists = hists.sort_values(["point", "layer", "step"], kind="stable")
    for h in hists.to_dict("records"):
        tag, step = f"{h['point']}/layer{h['layer']}", int(h["step"])
        limits, counts, low, high = histogram_buckets(h)
        finite = int(counts.sum())
        mean, std = _float(h["mean"]), _float(h["std"])
        ok = finite > 0 and math.isfinite(mean) and math.isfinite(std)
        writer.add_histogram_raw(
            tag,
            min=low,
            max=high,
            num=finite,
            sum=mean * finite if ok else 0.0,
            sum_squares=(std * std + mean * mean) * finite if ok else 0.0,
            bucket_limits=limits,
            bucket_counts=counts,
            global_step=step,
        )
        n = int(h["n"])
        for stat, value in (
            ("nan", h["nan"]),
            ("inf", h["inf"]),
            ("out_of_range_share", (h["below"] + h["above"]) / n if n else math.nan),
            ("mean", mean),
            ("std", std),
        ):
            writer.add_scalar(f"{h['point']}/{stat}/layer{h['layer']}", float(value), global_step=step)


def histogram_buckets(h: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A histograms.parquet row as TensorBoard buckets: (right edges, counts, left edge of the first, right edge
    of the last). The stored bins in order, preceded by a bucket (min, lo] holding `below` and followed by a bucket
    (hi, max] holding `above`, each only when it holds values; min and max are the finite values' extremes."""
    counts = np.asarray(h["counts"], dtype=np.int64)
    lo, hi = float(h["lo"]), float(h["hi"])
    edges = np.linspace(lo, hi, len(counts) + 1)
    limits, low, high = list(edges[1:]), lo, hi
    buckets = list(counts)
    vmin, vmax = _float(h["min"]), _float(h["max"])
    if h["below"]:
        limits.insert(0, lo)
        buckets.insert(0, int(h["below"]))
        low = vmin if math.isfinite(vmin) and vmin < lo else lo
    elif math.isfinite(vmin):
        low = min(max(vmin, lo), hi)  # TensorBoard draws the first non-empty bucket from `min`
    if h["above"]:
        high = vmax if math.isfinite(vmax) and vmax > hi else hi
        limits.append(high)
        buckets.append(int(h["above"]))
    elif math.isfinite(vmax):
        high = max(min(vmax, hi), lo)
    return np.asarray(limits, dtype=np.float64), np.asarray(buckets, dtype=np.int64), low, high


def numeric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]


def _scalars(writer: Any, tag: str, steps: pd.Series, values: pd.Series, *, skip_all_nan: bool = True) -> None:
    if skip_all_nan and not values.notna().any():
        return
    for step, value in zip(steps, values, strict=True):
        writer.add_scalar(tag, _float(value), global_step=int(step))


def _float(v: Any) -> float:
    return math.nan if v is None or v is pd.NA else float(v)


def _run_text(experiment: str, row: dict[str, Any], axes: list[str]) -> str:
    status = row["status"]
    line = f"**status**: {status}"
    if status == "diverged" and not pd.isna(row.get("diverged_step")):
        line += f" at step {int(row['diverged_step'])}"
    if not pd.isna(row.get("steps_done")):
        line += f" ({int(row['steps_done'])} steps done)"
    lines = [line, f"**run id**: {row['run_id']} (experiment {experiment})"]
    lines += [f"**{a}**: {row[a]}" for a in axes]
    if status == "failed":
        lines.append(f"**error**: {row.get('error')} (traceback: runs/{row['run_id']}/summary.json)")
    return "  \n".join(lines)  # markdown line breaks


# -- the log folder ---------------------------------------------------------------------------------------------


def _check_replaceable(target: Path) -> None:
    """Export replaces LOGDIR/<experiment>: refuse when it holds anything but TensorBoard event files (a results
    folder given as --out, say)."""
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is a file; choose another --out")
    if not target.is_dir():
        return
    for path in target.rglob("*"):
        if path.is_symlink() or (path.is_file() and not path.name.startswith(EVENT_FILE_PREFIX)):
            raise ExportError(
                f"{target} holds files other than TensorBoard event files ({path.relative_to(target)}); "
                "choose another --out"
            )
