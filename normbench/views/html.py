"""`normbench report`: one self-contained HTML page for a results folder, to read, keep or send.

    path = write_report(Path("results/init_scale"))        # -> results/init_scale/report.html

The page holds, for each experiment: the final numbers grouped over seeds (views.summary.aggregate_runs, the table of
`normbench summary --by`), the figures of `normbench plot` embedded as PNG data, every run's status with its
divergence step or failure message, the kernel and device that trained it, the versions that trained it and made
the report, the project's git commit when known, and the resolved config. Nothing is loaded from elsewhere: no
scripts, no fonts, no network; every text from the results folder is escaped.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import json
import os
import platform
import re
import struct
import subprocess
from collections import Counter
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console

from normbench.errors import UserError, is_disk_full
from normbench.labels import group_slug, value_text, where_folder
from normbench.results import (
    FINISHED,
    default_compare,
    experiment_axes,
    experiment_axis_groups,
    find_experiments,
    group_keys,
    load_runs,
)
from normbench.safe import load_yaml
from normbench.store import write_text_atomic
from normbench.version import __version__

if TYPE_CHECKING:
    from normbench.views.figures import Figure
from normbench.views.summary import (
    METRICS,
    aggregate_note,
    aggregate_runs,
    fmt_accuracy,
    fmt_loss,
    fmt_runs,
    fmt_stats,
    has_dropout,
    key_columns,
    shown_metrics,
)


def write_report(
    path: Path,
    out: Path | None = None,
    console: Console | None = None,
    where: list[str] | None = None,
    selected: dict[Path, pd.DataFrame | None] | None = None,
) -> Path:
    """Write the report of `path` (an experiment folder, or a folder of them: one section each) to `out`
    (default: PATH/report.html). Figures are drawn with `normbench plot`'s defaults unless PATH/<name>/figures
    already holds PNGs newer than runs.parquet. `selected`: the experiments to report and, for each, the rows of
    runs.parquet to show (None: all), as `--where` chose them (the `where` items name the selection)."""
    path = Path(path)
    selected = selected if selected is not None else dict.fromkeys(find_experiments(path))
    exps = list(selected)
    out = Path(out) if out is not None else path / "report.html"
    sections = [_experiment_section(e, console, selected[e], where) for e in exps]
    title = exps[0].name if len(exps) == 1 and exps[0] == path else f"{path.name or path} ({len(exps)} experiments)"
    text = _page(title, path, exps, sections)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text)
    except OSError as e:
        if is_disk_full(e):
            raise ReportError(f"disk full writing {out}; nothing partial was left there") from None
        raise ReportError(f"cannot write {out}: {e.strerror or e}") from None
    return out


class ReportError(UserError):
    """The page cannot be written; the message names the file."""


# -- figures ------------------------------------------------------------------------------------------------------


def experiment_figures(
    exp_dir: Path, console: Console | None = None, runs: pd.DataFrame | None = None, where: list[str] | None = None
) -> tuple[list[tuple[Path, Figure]], str | None]:
    """The experiment's PNG figures (their files and views.figures' Figure objects, in the table's order), drawn now
    unless figures/ (figures/where-.../ for a selection of `runs`) holds PNGs all newer than runs.parquet; and a note
    when there are none (e.g. no finished run)."""
    from normbench.views.data import PlotError, read_experiment  # matplotlib: only when drawing
    from normbench.views.figures import OPTIONS, planned
    from normbench.views.render import figure_dir, plot_experiment

    subdir = where_folder(where) if where and runs is not None else None
    existing = sorted((exp_dir / "figures" / (subdir or "")).glob("*.png"))
    runs_time = (exp_dir / "runs.parquet").stat().st_mtime
    keep = (lambda r: r.run_id.isin(runs.run_id)) if subdir else None
    try:
        if not existing or any(p.stat().st_mtime < runs_time for p in existing):
            status = console.status(f"{exp_dir.name}: drawing the figures") if console else nullcontext()
            with status:
                plot_experiment(exp_dir, compare=None, point="post_act", fmt="png", where=keep, subdir=subdir)
        exp = read_experiment(exp_dir, None, keep)
    except PlotError as e:
        return [], f"No figures: {e}"
    folder = figure_dir(exp, subdir, empty=False)
    # Whatever plot drew there: every point, every option's figures.
    figures = [(folder / f.path("png"), f) for f in planned(exp, "all", OPTIONS)]
    return [(path, f) for path, f in figures if path.suffix == ".png" and path.is_file()], None


def _figure_html(path: Path, figure: Figure) -> str:
    data = path.read_bytes()
    alt, caption = figure.caption()
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="{src}" alt="{_e(alt)}"{dims}>'
        f"<figcaption>{_e(caption)} <span class=file>({_e(path.name)})</span></figcaption></figure>"
    )


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def _figures_html(exp_dir: Path, runs: pd.DataFrame, console: Console | None, where: list[str] | None) -> str:
    found, note = experiment_figures(exp_dir, console, runs, where)
    if note:
        return f"<p class=note>{_e(note)}</p>"
    from normbench.views.figures import FIGURES  # matplotlib: only with figures

    kinds = [k.name for k in FIGURES]
    found.sort(key=lambda pf: (kinds.index(pf[1].kind), pf[0].stem))  # the table's order, then by name
    parts = [_figure_html(p, f) for p, f in found if f.group is None]
    groups: dict[str, list[tuple[Path, Figure]]] = {}
    for slug in _group_slugs(exp_dir, runs):  # the groups in the order of the runs
        groups[slug] = [(p, f) for p, f in found if f.slug == slug]
    groups = {slug: figs for slug, figs in groups.items() if figs}
    # Few groups are shown open; many fold away, one summary line each, so the page reads from top to bottom.
    opened = " open" if sum(len(g) for g in groups.values()) <= 10 else ""
    if groups and not opened:
        parts.append(f"<p class=note>The figures of each of the {len(groups)} groups of runs (click to open):</p>")
    for figs in groups.values():
        summary = f"{figs[0][1].title}: {len(figs)} figures"
        parts.append(
            f"<details{opened}><summary>{_e(summary)}</summary>{''.join(_figure_html(*f) for f in figs)}</details>"
        )
    return "".join(parts)


def _group_slugs(exp_dir: Path, runs: pd.DataFrame) -> list[str]:
    """The slugs of the groups `normbench plot` draws by default ('activation-relu'), in the order of the runs."""
    axes = [a for a in experiment_axes(exp_dir) if a in runs.columns]
    keys = group_keys(axes, experiment_axis_groups(exp_dir), default_compare(axes))
    slugs = ["all"]
    if keys:
        slugs += [group_slug(keys, tuple(values)) for values in runs[keys].drop_duplicates().itertuples(index=False)]
    return list(dict.fromkeys(slugs))


# -- tables -------------------------------------------------------------------------------------------------------


def _key_headers(keys: list[str]) -> list[str]:
    """Table headers of grid keys: the last part of each ('std' for model.weight_init.std) when that is unique,
    the whole key in the tooltip."""
    short = [k.split(".")[-1] for k in keys]
    if len(set(short)) < len(short):
        short = keys
    return [f'<th title="{_e(k)}">{_e(s)}</th>' for k, s in zip(keys, short, strict=True)]


def _aggregate_html(exp_dir: Path, runs: pd.DataFrame, axes: list[str]) -> str:
    by = [a for a in axes if a != "seed"]
    df = aggregate_runs(exp_dir, by, runs)
    keys, metrics = key_columns(df), shown_metrics(df)
    # At a reading width of ~900 px, many columns become two tables: the losses, then the rest.
    losses = [m for m in metrics if "loss" in m]
    parts = [losses, [m for m in metrics if m not in losses]] if len(metrics) > 4 else [metrics]
    tables = []
    for chunk in (c for c in parts if c):
        head = [*_key_headers(keys), "<th>runs</th>"]
        head += [f"<th>{_e(METRICS[m]).replace(chr(10), '<br>')}</th>" for m in chunk]
        rows = []
        for _, r in df.iterrows():
            cls = " class=failed" if r.failed else " class=diverged" if r.diverged else ""
            cells = [f"<td>{_e(value_text(r[k]))}</td>" for k in keys]
            ok, others = fmt_runs(r)
            spread = f"<span class=spread>{_e(others)}</span>" if others else ""
            cells.append(f"<td>{_e(ok)}{spread}</td>")
            for m in chunk:
                centre, lo_hi = fmt_stats(r, m)
                lo_hi_html = f"<span class=spread>{_e(lo_hi)}</span>" if lo_hi else ""
                cells.append(f"<td class=num>{_e(centre)}{lo_hi_html}</td>")
            rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
        thead = f"<thead><tr>{''.join(head)}</tr></thead>"
        tables.append(f"<div class=scroll><table class=groups>{thead}<tbody>{''.join(rows)}</tbody></table></div>")
    grouped = f"grouped by {', '.join(by)}" if by else "all runs in one group"
    note = aggregate_note(metrics, dropout=has_dropout(runs, exp_dir))
    return "".join(tables) + f"<p class=note>One row per group of runs ({_e(grouped)}); {_e(note)}</p>"


def _runs_html(runs: pd.DataFrame, axes: list[str], *, dropout: bool) -> str:
    accuracy = bool(runs.final_train_accuracy.notna().any())
    head = [*_key_headers(axes)]
    names = ["status", "steps", "train loss", "test loss", *(["train acc", "test acc"] if accuracy else [])]
    head += [f"<th>{n}</th>" for n in (*names, "time (s)", "kernel, device", "run id")]
    rows = []
    for _, r in runs.iterrows():
        status = f"diverged at {r.diverged_step}" if r.status == "diverged" else r.status
        cls = f" class={r.status}" if r.status in ("diverged", "failed") else ""
        cells = [f"<td>{_e(value_text(r[a]))}</td>" for a in axes] + [f"<td>{_e(status)}</td>"]
        nums = [
            _na(r.steps_done),
            "inf/NaN" if r.status == "diverged" else fmt_loss(_float(r.final_train_loss)),
            fmt_loss(_float(r.final_test_loss)),
        ]
        if accuracy:  # a diverged run's outputs at its last step are not numbers: no accuracy either
            acc = (None, None) if r.status == "diverged" else (r.final_train_accuracy, r.final_test_accuracy)
            nums += [fmt_accuracy(_float(a)) for a in acc]
        nums.append("-" if pd.isna(r.wall_time_s) else f"{r.wall_time_s:.2f}")
        cells += [f"<td class=num>{_e(n)}</td>" for n in nums]
        kernel, device = r.get("engine.kernel"), r.get("engine.device")
        cells.append(f"<td>{_e('-' if _na(kernel) == '-' else f'{kernel}, {_na(device)}')}</td>")
        cells.append(f"<td><code>{_e(r.run_id)}</code></td>")
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    thead = f"<thead><tr>{''.join(head)}</tr></thead>"
    dropped = "; with model.dropout, dropout on" if dropout else ""
    test = ", test numbers with running statistics (eval mode)" if runs.final_test_loss.notna().any() else ""
    note = (
        f"Final numbers at the last step: train loss on the training set with batch statistics (train mode"
        f"{dropped}){test}. Kernel and device: what computed the run's steps."
    )
    return (
        f"<div class=scroll><table class=runs>{thead}<tbody>{''.join(rows)}</tbody></table></div>"
        f"<p class=note>{_e(note)}</p>"
    )


def _problems_html(exp_dir: Path, runs: pd.DataFrame, axes: list[str]) -> str:
    """Diverged runs with their step and last finite loss; failed runs with their error and traceback."""
    items = []
    for _, r in runs[runs.status.isin(("diverged", "failed"))].iterrows():
        where = ", ".join(f"{a} = {r[a]}" for a in axes) or r.run_id
        if r.status == "diverged":
            last = fmt_loss(_float(r.last_finite_train_loss))
            items.append(
                f"<li><b>diverged at step {_e(r.diverged_step)}</b>: {_e(where)} (run <code>{_e(r.run_id)}</code>); "
                f"last finite training loss {_e(last)}</li>"
            )
        else:
            summary = _read_summary(exp_dir, r.run_id)
            trace = _no_paths(summary.get("traceback") or "")
            details = f"<details><summary>traceback</summary><pre>{_e(trace)}</pre></details>" if trace else ""
            items.append(
                f"<li><b>failed</b>: {_e(where)} (run <code>{_e(r.run_id)}</code>): "
                f"<code>{_e(r.error or 'no message')}</code>{details}</li>"
            )
    return f"<ul class=problems>{''.join(items)}</ul>" if items else ""


def _engine_html(exp_dir: Path, runs: pd.DataFrame) -> str:
    """What trained the runs: kernel, device, dtype, compiling, PyTorch (runs.parquet), and the versions recorded
    in each run's summary.json."""
    done = runs[runs.status.isin(FINISHED)]
    columns = [f"engine.{k}" for k in ("kernel", "device", "dtype", "compiled", "threads", "torch")]
    lines = []
    for values, group in done.groupby(columns, sort=False, dropna=False):
        kernel, device, dtype, compiled, threads, torch_v = (_na(v) for v in values)
        stacks = sorted({int(x) for x in group["engine.stack"].dropna()})
        stack = f"stacks of {stacks[0]}" + (f"-{stacks[-1]}" if stacks[-1] != stacks[0] else "") if stacks else ""
        lines.append(
            f"{len(group)} run{'s' if len(group) > 1 else ''}: {kernel} kernel on {device}, {dtype}, "
            f"{'compiled' if compiled is True else 'not compiled'}, {threads} thread{'' if threads == 1 else 's'}, "
            f"{stack}, PyTorch {torch_v}"
        )
    envs: Counter[str] = Counter()
    for rid in runs.run_id[runs.status != "missing"]:
        env = _read_summary(exp_dir, rid).get("environment") or {}
        if env:
            envs[", ".join(f"{k} {v}" for k, v in env.items())] += 1
    lines += [f"{n} run{'s' if n > 1 else ''} recorded with {env}" for env, n in envs.most_common()]
    return "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>" if lines else "<p>No run trained yet.</p>"


def _read_summary(exp_dir: Path, run_id: str) -> dict[str, Any]:
    try:
        return json.loads((exp_dir / "runs" / run_id / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


# -- one experiment, the page -------------------------------------------------------------------------------------


def _experiment_section(
    exp_dir: Path, console: Console | None, runs: pd.DataFrame | None = None, where: list[str] | None = None
) -> str:
    runs = load_runs(exp_dir) if runs is None else runs
    axes = [a for a in experiment_axes(exp_dir) if a in runs.columns]
    config_text = (exp_dir / "config.yaml").read_text()
    config = load_yaml(config_text) or {}
    counts = runs.status.value_counts()
    status = ", ".join(f"{counts[s]} {s}" for s in ("ok", "diverged", "failed", "missing") if counts.get(s))
    grid = " × ".join(f"{a} ({runs[a].astype(str).nunique()})" for a in axes) or "no grid"
    wall = runs.wall_time_s.sum()
    parts = [
        f'<section id="{_e(_anchor(exp_dir.name))}"><h2>{_e(exp_dir.name)}</h2>',
        f"<p class=description>{_e(config['description'])}</p>" if config.get("description") else "",
        f"<p class=note>Only the runs selected by {_e(' '.join('--where ' + w for w in where))}.</p>" if where else "",
        f"<p>{len(runs)} runs ({_e(status)}); grid: {_e(grid)}; {wall:.3g} s of training in all. "
        f"Results folder: <code>{_e(exp_dir.name)}</code></p>",
        _verdicts_html(exp_dir, runs, where),
        "<h3>Final numbers over seeds</h3>",
        _aggregate_html(exp_dir, runs, axes),
        "<h3>Figures</h3>",
        _figures_html(exp_dir, runs, console, where),
        "<h3>Runs</h3>",
        _problems_html(exp_dir, runs, axes),
        _runs_html(runs, axes, dropout=has_dropout(runs, exp_dir)),
        "<h3>What trained the runs</h3>",
        _engine_html(exp_dir, runs),
        "<h3>Resolved config</h3>",
        f"<p class=note>As stored in <code>{_e(exp_dir.name)}/config.yaml</code> (every key, defaults included; "
        "each run's own config is in <code>runs/&lt;run id&gt;/config.yaml</code>).</p>"
        f"<pre class=config>{_e(_no_paths(config_text))}</pre>",
        "</section>",
    ]
    return "".join(parts)


def _verdicts_html(exp_dir: Path, runs: pd.DataFrame, where: list[str] | None) -> str:
    """The claims file's verdicts on these runs (claims.verdicts_for: those of `normbench claims` and the demo),
    or a note saying why there are none; nothing when no claim is about this folder."""
    from normbench.claims import verdicts_for

    if where:
        return "<p class=note>The claims' verdicts are shown for the whole experiment only (no --where).</p>"
    rows, why = verdicts_for(exp_dir, runs)
    if why:
        return f"<h3>Verdicts on the articles' claims</h3><p class=note>{_e(why)}.</p>"
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_e(r.claim)} <code>{_e(r.claim_id)}</code></td><td>{_e(r.setting)}</td>"
        f"<td class=verdict-{_e(r.verdict.replace(' ', '-'))}><b>{_e(r.verdict)}</b></td>"
        f"<td>{_e(r.measurement)}<span class=spread>{_e(r.reason)}</span></td></tr>"
        for r in rows
    )
    head = "<thead><tr><th>claim</th><th>setting</th><th>verdict</th><th>measured over seeds; why</th></tr></thead>"
    note = (
        "The verdicts of <code>normbench claims</code> (the rules: docs/claims.md of the normbench repository) on "
        "the runs of this folder."
    )
    return (
        f"<h3>Verdicts on the articles' claims</h3><div class=scroll><table class=verdicts>{head}<tbody>{body}"
        f"</tbody></table></div><p class=note>{note}</p>"
    )


# An absolute path (a config file's, a traceback's): the report names the file only, never where it lies.
_PATH = re.compile(r"(?<![\w.])/(?:[^\s\"'/]+/)+([^\s\"'/]+)")


def _no_paths(text: str) -> str:
    """`text` with every absolute path cut to its file name: '/home/a/x/configs/t.yaml' -> 't.yaml'."""
    return _PATH.sub(lambda m: m.group(1), text)


def project_commit() -> str | None:
    """The git commit of the normbench source in use, '+ uncommitted changes' when its files differ from it;
    None when the package is not a git checkout (an installed wheel) or git is not there."""
    src = Path(__file__).resolve().parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # reading only: git status must not rewrite the index

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=src, capture_output=True, text=True, timeout=10, env=env)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != src.parent:  # the package inside some other repository does not count
        return None
    head = git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" + uncommitted changes" if dirty else "")


def _version_of(package: str) -> str:
    """An installed package's version, read from its metadata: the report imports no torch to say which it is."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _meta_html(path: Path) -> str:
    rows = [
        ("made", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("from", path.resolve().name or str(path)),
        ("normbench", __version__),
        ("torch", _version_of("torch")),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("platform", platform.platform()),
    ]
    commit = project_commit()
    if commit:
        rows.append(("git commit", commit))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class=meta>{body}</table>"


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1b1b1b;
 background:#fff;max-width:940px;margin:0 auto;padding:20px 18px 60px}
h1{font-size:1.55em;margin:.3em 0 .4em}
h2{font-size:1.3em;margin:2.2em 0 .4em;padding-bottom:.2em;border-bottom:2px solid #d8d8d8}
h3{font-size:1.05em;margin:1.8em 0 .4em}
p{margin:.4em 0}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f5f5f5;border:1px solid #e4e4e4;padding:10px 12px;overflow:auto;line-height:1.35}
pre.config{max-height:26em}
table{border-collapse:collapse;font-size:13px;margin:.4em 0}
th,td{padding:3px 9px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
thead th{background:#f2f2f2;border-bottom:2px solid #cfcfcf;vertical-align:bottom}
table.runs td,table.runs th{white-space:nowrap;padding:3px 7px}
table.groups{margin-bottom:1.2em}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.spread{display:block;color:#6b6b6b;font-size:11.5px}
tr.diverged td{background:#fff6dc}
tr.failed td{background:#fde7e7}
table.meta th{background:none;font-weight:600;padding-left:0;color:#444}
.scroll{overflow-x:auto}
.note{color:#555;font-size:13px}
.description{font-style:italic}
figure{margin:1.4em 0}
figure img{display:block;max-width:100%;height:auto;border:1px solid #ececec}
figcaption{font-size:13px;color:#3a3a3a;margin-top:.35em}
figcaption .file{color:#8a8a8a}
details{margin:1em 0}
summary{cursor:pointer;font-weight:600}
ul.problems li{margin:.25em 0}
td.verdict-supported{color:#1a7f37}
td.verdict-not-supported{color:#b42318}
td.verdict-inconclusive{color:#8a6100}
td.verdict-depends-on-rounding{color:#8250df}
nav ul{columns:2;padding-left:1.2em}
"""


def _page(title: str, path: Path, exps: list[Path], sections: list[str]) -> str:
    toc = ""
    if len(exps) > 1:
        links = "".join(f'<li><a href="#{_e(_anchor(e.name))}">{_e(e.name)}</a></li>' for e in exps)
        toc = f"<nav><h2>Experiments</h2><ul>{links}</ul></nav>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>normbench report: {_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>normbench report: {_e(title)}</h1>{_meta_html(path)}{toc}{''.join(sections)}"
        "</body></html>\n"
    )


def _anchor(name: str) -> str:
    return "exp-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _na(v: Any) -> Any:
    return "-" if v is None or (not isinstance(v, str) and pd.isna(v)) else v


def _float(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)
