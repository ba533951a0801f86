"""Writing the results folder: atomic writes, one self-explaining folder per run, one table per experiment.

    OUT/<name>/config.yaml            the resolved experiment config (after --set)
    OUT/<name>/runs.parquet           one row per run of the current grid (docs/results-format.md)
    OUT/<name>/runs/<run_id>/         config.yaml, summary.json, curves/layers/histograms.parquet
                                      (and landscape.parquet when record.landscape_every is set,
                                      time.parquet for a sequence model with record.time)
    OUT/<name>/figures/               written by `normbench plot`

A run folder is built under a temporary name and renamed into place whole, so a run is either finished or
absent: a killed sweep never leaves a half-written run, and the next `normbench run` does only what is missing.
Every file is written to a temporary file and renamed over its target (os.replace is atomic on POSIX).

Every run and every experiment folder says which results format (results.RESULTS_FORMAT) wrote it. Reading the
folder back is results.py's; runs.parquet, derived from the run folders, is rebuilt here when it disagrees with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from normbench.finals import CURVE_FINALS, from_tables
from normbench.results import (
    COLUMNS,
    ENGINE,
    FINISHED,
    FORMAT_KEY,
    FORMAT_META,
    OPTIONAL_TABLES,
    RESULTS_FORMAT,
    TABLES,
    DamagedResults,
    columns_problem,
    experiment_axes,
    fingerprint,
    folder_format,
    format_problem,
    is_array,
    jsonable,
    load_runs,
    load_summary,
    missing_columns,
    read_summaries,
    read_summary,
    run_format,
    verify_run,
)
from normbench.safe import load_yaml

if TYPE_CHECKING:
    from normbench.config import Experiment, Run
    from normbench.engine.driver import RunFailure, RunResult


def _tmp(path: Path, keep_suffix: bool = False) -> Path:
    """The temporary name beside `path` a write goes to: .NAME.tmp-PID (.NAME.tmp-PID.SUFFIX with keep_suffix, for
    writers that take the format from the suffix, as matplotlib does)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix if keep_suffix else ''}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    write_file_atomic(path, write)


def write_file_atomic(path: Path, write: Any, *, keep_suffix: bool = False) -> None:
    """`write(tmp)` writes the file to a temporary name beside `path` (_tmp), which is then renamed over it: a
    reader never sees a partial file (a figure cut by a full disk), and on any failure (disk full, Ctrl-C) the
    temporary file is removed and the target is as it was. A `write` that writes nothing replaces nothing."""
    tmp = _tmp(path, keep_suffix)
    remove_stale_temps(path.parent, path.name)
    try:
        write(tmp)
        if tmp.exists():
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: Path, name: str = "*") -> None:
    """Remove the temporary files `.<name>.tmp-<pid>` (of one target, or all) in `folder` whose writer is gone (a
    process killed while writing)."""
    import glob

    try:
        stale = list(folder.glob(f".{glob.escape(name) if name != '*' else '*'}.tmp-*"))
    except OSError:
        return
    for path in stale:
        pid = re.search(r"\.tmp-(\d+)(\.\w+)?$", path.name)  # .NAME.tmp-PID, or .NAME.tmp-PID.png (figures)
        if pid and path.is_file() and not _pid_alive(pid.group(1)):
            with contextlib.suppress(OSError):
                path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_parquet_atomic(df: pd.DataFrame, path: Path, metadata: dict[bytes, bytes] | None = None) -> None:
    """`df` to `path`, with `metadata` added to the file's schema metadata."""

    def write(tmp: Path) -> None:
        if metadata:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata}), tmp)
        else:
            df.to_parquet(tmp, index=False)

    write_file_atomic(path, write)


def format_metadata() -> dict[bytes, bytes]:
    """runs.parquet's schema metadata: the results format, and the normbench that wrote it."""
    from normbench.version import __version__

    return {FORMAT_META: str(RESULTS_FORMAT).encode(), b"normbench.version": __version__.encode()}


def to_json(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"


def environment() -> dict[str, str]:
    import torch  # here, not at the top: reading results (summary, plot, report) needs no torch

    from normbench.version import __version__

    return {
        "normbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class ExperimentStore:
    """One experiment folder, OUT/<name>/, as a sweep writes it: its config, its runs' claims and folders, and
    runs.parquet. What it holds is read back by normbench.results (read_summary, load_runs, ...)."""

    def __init__(self, out: Path | str, name: str):
        self.dir = Path(out) / name
        self.runs_dir = self.dir / "runs"

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """A run's summary, or None when it has not finished (results.load_summary)."""
        return load_summary(self.dir, run_id)

    def read_summary(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(the run's summary, None), or (None, what is wrong with its summary.json) (results.read_summary)."""
        return read_summary(self.dir, run_id)

    def is_done(self, run_id: str, *, retry_failed: bool = False, summary: dict[str, Any] | None = None) -> bool:
        """Whether `run_id` needs no training: finished with its files intact, or failed (unless retry_failed).
        `summary`: its summary.json when the caller has read it already."""
        s = summary if summary is not None else self.summary(run_id)
        if s is None or run_format(s) != RESULTS_FORMAT:  # another format's run is trained again
            return False
        if s["status"] in FINISHED:
            return not verify_run(self.dir, run_id, s)
        return s["status"] == "failed" and not retry_failed

    # -- claims: two `normbench run` on one folder never train the same run ------------------------------------

    def claim(self, run_id: str) -> bool:
        """Take run `run_id` for this process: an atomically created runs/.claim-<id> holding pid and host. A claim
        whose process is gone (on this host) is taken over; a live one, or one from another host, is respected."""
        path = self.runs_dir / f".claim-{run_id}"
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _stale_claim(path):  # its process was killed, or it was released meanwhile
                    path.unlink(missing_ok=True)
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return True
        return False

    def release(self, run_id: str) -> None:
        path = self.runs_dir / f".claim-{run_id}"
        try:
            if path.read_text().partition(" ")[0] == str(os.getpid()):
                path.unlink()
        except OSError:
            pass

    # -- writing ---------------------------------------------------------------------------------------------

    def prepare(self, exp: Experiment, keep_config: bool = False) -> None:
        """Make the folder ready for `exp`'s runs: stale temporary folders and claims removed, config.yaml written
        (unless keep_config: a grid within the folder's leaves the folder's config as it is)."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.dir)
        for claim in self.runs_dir.glob(".claim-*"):
            if _stale_claim(claim):
                claim.unlink(missing_ok=True)
        if not keep_config:
            text = f"# resolved from {self._source(exp)}\n" + yaml.safe_dump(config_dict(exp), sort_keys=False)
            write_text_atomic(self.dir / "config.yaml", text)

    def _source(self, exp: Experiment) -> str:
        """Where exp's config came from; for the folder's own config.yaml (retrained with --force), the source it
        names."""
        path = self.dir / "config.yaml"
        try:
            if Path(exp.source).resolve() == path.resolve():
                first = path.read_text().partition("\n")[0]
                return first.removeprefix("# resolved from ") if first.startswith("# resolved from ") else exp.source
        except OSError:
            pass
        return exp.source

    def write_run(self, run: Run, outcome: RunResult | RunFailure) -> dict[str, Any]:
        """Commit one run: a finished one (a RunResult) or a failed one (a RunFailure). Returns its summary."""
        tmp = self.runs_dir / f".tmp-{run.run_id}-{os.getpid()}"
        try:
            return self._write_run(run, outcome, tmp)
        except BaseException:  # disk full, Ctrl-C: the run stays as it was (absent, or its earlier folder)
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_run(self, run: Run, outcome: RunResult | RunFailure, tmp: Path) -> dict[str, Any]:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "config.yaml").write_text(yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False))
        summary = {"run_id": run.run_id, "params": run.params, "seed": run.config.seed, FORMAT_KEY: RESULTS_FORMAT}
        from normbench.engine.driver import RunFailure

        if isinstance(outcome, RunFailure):
            summary |= {"status": "failed", "error": outcome.error, "traceback": outcome.traceback}
        else:
            # What verify() checks: a finished run counts as finished only while its files are these.
            summary["files"] = {}
            for name in TABLES + tuple(t for t in OPTIONAL_TABLES if t in outcome.tables):
                df = outcome.tables.get(name, pd.DataFrame()).copy()
                df.insert(0, "run_id", run.run_id)
                data = df.to_parquet(index=False)
                (tmp / f"{name}.parquet").write_bytes(data)
                summary["files"][f"{name}.parquet"] = fingerprint(data)
            summary |= run_summary(outcome)
        summary |= {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment(),
        }
        text = to_json(summary)
        (tmp / "summary.json").write_text(text)
        replace_dir(tmp, self.runs_dir / run.run_id)
        # As summary.json holds it (an infinite loss as null): runs.parquet written from it during the sweep is the
        # table rebuilt from the run folders, which `check` and the commands that read results compare it with.
        return json.loads(text)

    def write_runs_table(
        self,
        exp: Experiment,
        known: dict[str, dict | None] | None = None,
        listed: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> pd.DataFrame:
        """runs.parquet: one row per run of the experiment's current grid, finished or not. `known`: the runs'
        summaries when the caller has them (None: not finished), instead of reading every summary.json again.
        `listed`: the runs to list as (run id, grid values) when not exp's (a grid within the folder's keeps the
        folder's). A run of another results format is listed `missing`: `normbench run` trains it again."""
        df = self.runs_frame(exp, known, listed)
        write_parquet_atomic(df, self.dir / "runs.parquet", format_metadata())
        return df

    def runs_frame(
        self,
        exp: Experiment | None,
        known: dict[str, dict | None] | None = None,
        listed: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> pd.DataFrame:
        """runs.parquet's rows as write_runs_table writes them (exp may be None when `listed` is given)."""
        rows = []
        if listed is None:
            listed = [(r.run_id, r.params) for r in exp.runs]  # type: ignore[union-attr]
        for run_id, params in listed:
            s = known[run_id] if known is not None else self.summary(run_id)
            if s is None or run_format(s) != RESULTS_FORMAT:
                s = {"status": "missing"}
            rows.append(
                {
                    "run_id": run_id,
                    **params,
                    "status": s["status"],
                    "diverged_step": s.get("diverged_step"),
                    "steps_done": s.get("steps_done"),
                    **{k: _as_float(s.get(k)) for k in CURVE_FINALS},
                    "last_finite_train_loss": _as_float(s.get("last_finite_train_loss")),
                    "wall_time_s": _as_float(s.get("wall_time_s")),
                    "dead_fraction": [_as_float(v) for v in s.get("dead_fraction", [])],
                    "saturated_fraction": [_as_float(v) for v in s.get("saturated_fraction", [])],
                    "error": s.get("error"),
                    **{f"engine.{k}": (s.get("engine") or {}).get(k) for k in ENGINE},
                }
            )
        df = pd.DataFrame(rows)
        df["diverged_step"] = df["diverged_step"].astype("Int64")
        df["steps_done"] = df["steps_done"].astype("Int64")
        for col in ("engine.threads", "engine.stack"):
            df[col] = df[col].astype("Int64")
        df["engine.compiled"] = df["engine.compiled"].astype("boolean")
        return df

    # -- what a config does to the folder's runs -------------------------------------------------------------

    def change(self, exp: Experiment, *, force: bool = False) -> FolderChange:
        """What writing `exp` into this folder does to the runs it lists (its runs.parquet; its config.yaml's grid
        when that table cannot be read), compared as sets of run ids: nothing there yet ('new'), the same runs
        ('same'), more runs ('extends': exp becomes the folder's config), fewer ('within': the folder's config and
        list stay), or a grid that would no longer list some of them ('refused'). A folder of another results
        format is 'refused' too, or with `force` 'retrain': every run of exp is trained again and the folder starts
        over from exp. Reads only."""
        if not (self.dir / "runs.parquet").is_file() and not (self.dir / "config.yaml").is_file():
            return FolderChange("new", f"{self.dir}: a new experiment folder")
        new_ids = [r.run_id for r in exp.runs]
        found = self._format_or_current()
        if found != RESULTS_FORMAT:
            if not force:
                return FolderChange("refused", format_problem(str(self.dir), found, self.dir))
            gone = len(set(self._listed_ids(quiet=True)) - set(new_ids))
            left = f"; {gone} runs of its earlier grid are not in this one: they stay in runs/, unlisted" * bool(gone)
            return FolderChange(
                "retrain",
                f"{self.dir}: results format {found} -> {RESULTS_FORMAT} (--force): every run of the grid is trained "
                f"again and the folder's config.yaml and runs.parquet are this config's{left}",
            )
        old_ids = self._listed_ids()
        old, new = set(old_ids), set(new_ids)
        diff = config_changes(self.dir / "config.yaml", config_dict(exp))
        diff = f" ({diff})" if diff else ""
        if old == new:
            return FolderChange("same", f"{self.dir}: the same {len(new)} runs as the folder lists")
        if old <= new:
            kept = sum((self.summary(r) or {}).get("status") in FINISHED for r in old)
            return FolderChange(
                "extends",
                f"{self.dir}: extends its grid from {len(old)} to {len(new)} runs{diff}; "
                f"its {kept} finished runs are kept",
            )
        if new <= old:
            return FolderChange(
                "within",
                f"{self.dir}: the {len(new)} runs asked for are within its grid of {len(old)}{diff}; its config.yaml "
                f"is kept and runs.parquet lists all {len(old)}",
                self._listed_rows(),
            )
        return FolderChange(
            "refused",
            f"{self.dir}: this config would no longer list {len(old - new)} of the folder's {len(old)} runs{diff}; "
            f"nothing was written. Run it into a folder of its own (--set name=NEW or --out OTHER), or remove "
            f"{self.dir} to start over",
        )

    def _format_or_current(self) -> int:
        """The folder's results format; the current one when runs.parquet is missing or unreadable (its runs are
        then known from config.yaml, and each run's own format decides whether it is trained again)."""
        try:
            return folder_format(self.dir)
        except (OSError, DamagedResults):
            return RESULTS_FORMAT

    def _listed_ids(self, quiet: bool = False) -> list[str]:
        """The run ids runs.parquet lists; config.yaml's grid when runs.parquet cannot be read. ConfigError when
        neither can (quiet: [])."""
        from normbench.config import ConfigError, experiment_from_dict

        try:
            return pd.read_parquet(self.dir / "runs.parquet", columns=["run_id"]).run_id.tolist()
        except (OSError, ValueError, KeyError):
            pass
        try:
            raw = load_yaml((self.dir / "config.yaml").read_text())
            return [r.run_id for r in experiment_from_dict(raw, str(self.dir / "config.yaml")).runs]
        except (OSError, ValueError, AttributeError):  # ConfigError and yaml's errors are ValueErrors
            if quiet:
                return []
            raise ConfigError(
                f"{self.dir}: neither runs.parquet nor config.yaml can be read, so which runs it holds is unknown; "
                "remove the folder to start over, or write to another one (--set name=NEW or --out OTHER)"
            ) from None

    def _listed_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(run id, grid values) of each run runs.parquet lists, to list them again."""
        runs = load_runs(self.dir)
        axes = [a for a in experiment_axes(self.dir) if a in runs.columns]
        return [(row["run_id"], {a: _plain(row[a]) for a in axes}) for row in runs.to_dict("records")]


@dataclass
class FolderChange:
    """What writing an experiment into its folder does (ExperimentStore.change): `case` is 'new', 'same',
    'extends', 'within', 'retrain' or 'refused'; `message` the one line that says so;
    `listed`: for 'within', the folder's runs, which runs.parquet goes on listing."""

    case: str
    message: str = ""
    listed: list[tuple[str, dict[str, Any]]] | None = field(default=None, repr=False)


def config_dict(exp: Experiment) -> dict[str, Any]:
    """The resolved experiment config as config.yaml holds it."""
    return exp.config.model_dump(mode="json")


def config_changes(old_path: Path, new: dict[str, Any], limit: int = 3) -> str:
    """The keys whose values differ between the config in `old_path` (a folder's config.yaml) and `new`, as
    'train.lr 0.001 -> 0.01; seeds [1, 2, 3] -> [1..20]': at most `limit`, values shortened; '' when the old one
    cannot be read or nothing but the description differs."""
    try:
        old = load_yaml(old_path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(old, dict):
        return ""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if k != "description" and a.get(k, _ABSENT) != b.get(k, _ABSENT)]
    shown = [f"{k} {_short(a.get(k, _ABSENT))} -> {_short(b.get(k, _ABSENT))}" for k in keys[:limit]]
    more = f"; {len(keys) - limit} more keys" if len(keys) > limit else ""
    return "; ".join(shown) + more


_ABSENT = object()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}, 'grid': {'model.norm': [...]}} -> {'train.lr': 0.1, 'grid.model.norm': [...]}."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if k == "grid" and not prefix and v is None:
            v = {}
        if isinstance(v, dict):
            flat |= _flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _short(v: Any, width: int = 40) -> str:
    """A config value in a message: absent, a run of consecutive integers as [1..20], long values cut."""
    if v is _ABSENT:
        return "(none)"
    if isinstance(v, list) and len(v) > 3 and all(type(x) is int for x in v) and v == list(range(v[0], v[-1] + 1)):
        return f"[{v[0]}..{v[-1]}]"
    text = json.dumps(v, separators=(", ", ": ")) if isinstance(v, list | dict) else str(v)
    text = text.replace('"', "")
    if len(text) > width:
        count = f" ({len(v)} values)" if isinstance(v, list) else ""
        text = text[: width - len(count) - 3] + "..." + count
    return text


def _plain(v: Any) -> Any:
    """A value read back from parquet as a config holds it: tuples and arrays as lists, numpy scalars as Python's."""
    if isinstance(v, tuple) or is_array(v):
        return [_plain(x) for x in v]
    return v.item() if hasattr(v, "item") else v


def run_summary(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "diverged_step": result.diverged_step,
        "steps_done": result.steps_done,
        **from_tables(result.tables["curves"], result.tables["layers"]),
        "wall_time_s": result.wall_time_s,
        "engine": result.provenance,
    }


def _as_float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def remove_stale(folder: Path, name: str = "") -> None:
    """Remove the .tmp-/.old- folders (of `name`, or all) that a killed process left in `folder`: those whose
    writer's pid, the last part of their name, is gone."""
    prefix = f"{name}-" if name else ""
    for stale in [*folder.glob(f".tmp-{prefix}*"), *folder.glob(f".old-{prefix}*")]:
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)


def remove_leftovers(exp_dir: Path) -> None:
    """What killed processes left in an experiment folder: temporary files (.runs.parquet.tmp-PID, .report.html.tmp-
    PID, a figure's) beside it, in it and in figures/, and temporary run folders in runs/."""
    for folder in (exp_dir.parent, exp_dir, exp_dir / "figures"):
        remove_stale_temps(folder)
    if (exp_dir / "runs").is_dir():
        remove_stale(exp_dir / "runs")


def replace_dir(src: Path, dst: Path) -> None:
    """Put the folder `src` in place of `dst` by renames: a reader sees the old folder or the new one, whole."""
    if dst.exists():
        old = dst.with_name(f".old-{dst.name}-{os.getpid()}")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


def _stale_claim(path: Path) -> bool:
    """Whether a claim file is gone, or held by a process of this host that no longer exists."""
    try:
        pid, _, host = path.read_text().partition(" ")
    except OSError:
        return True
    return host.strip() == socket.gethostname() and not _pid_alive(pid)


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def rebuilt_runs_table(
    exp_dir: Path, summaries: dict[str, tuple[dict[str, Any] | None, str | None]] | None = None
) -> tuple[pd.DataFrame, bool]:
    """runs.parquet as the run folders say it should be (the same runs and grid values, every other column from
    the runs' summary.json), and whether the file on disk differs from it. runs.parquet is derived: an edited
    value, a row of a run whose folder changed since, must never be shown as a result. DamagedResults when
    runs.parquet cannot be read at all."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = exp_dir / "runs.parquet"
    try:
        on_disk = pq.read_table(path)
        runs = on_disk.to_pandas()
    except (OSError, ValueError) as e:
        raise DamagedResults(f"{path} cannot be read ({type(e).__name__}); `normbench run` writes it again") from None
    missing = missing_columns(list(runs.columns), "runs")
    if missing:
        raise DamagedResults(columns_problem(str(exp_dir), "runs", missing, exp_dir))
    store = ExperimentStore(exp_dir.parent, exp_dir.name)
    axes = [c for c in runs.columns if c not in COLUMNS["runs"]]
    listed, known = [], {}
    if summaries is None:
        summaries = read_summaries(exp_dir)
    for row in runs.to_dict("records"):
        rid = str(row["run_id"])
        s = summaries.get(rid, (None, None))[0]
        params = {a: _plain(row[a]) for a in axes}
        if s is not None and run_format(s) != RESULTS_FORMAT:
            # a run of another results format is named by its own message (check, load_table), never rebuilt away
            return runs, False
        if s is not None:
            params |= {k: v for k, v in s["params"].items() if k in params}
        listed.append((rid, params))
        known[rid] = s
    rebuilt = store.runs_frame(None, known, listed) if listed else runs

    def written(table: pa.Table) -> bytes:
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(None), buf)
        return buf.getvalue()

    try:  # compared as parquet writes them, read back (list columns are named as a file names them)
        expected = pq.read_table(io.BytesIO(written(pa.Table.from_pandas(rebuilt, preserve_index=False))))
        differs = written(on_disk) != written(expected)
    except (pa.ArrowException, ValueError, TypeError):
        differs = True
    return rebuilt, differs


def repair_runs_table(
    exp_dir: Path, summaries: dict[str, tuple[dict[str, Any] | None, str | None]] | None = None
) -> str | None:
    """Rebuild runs.parquet from the run folders when it disagrees with them; one line saying so, or None when
    it agrees. DamagedResults when it disagrees and cannot be rewritten, or cannot be read. `summaries`: the run
    folders' read_summaries when the caller has them."""
    rebuilt, differs = rebuilt_runs_table(exp_dir, summaries)
    if not differs:
        return None
    path = exp_dir / "runs.parquet"
    try:
        write_parquet_atomic(rebuilt, path, format_metadata())
    except OSError as e:
        raise DamagedResults(
            f"{path} disagrees with the run folders' summary.json and cannot be rebuilt ({e.strerror or e}); "
            f"`normbench check {exp_dir}` names what differs"
        ) from None
    return f"{path} disagreed with the run folders' summary.json (edited or damaged); rebuilt from them"
