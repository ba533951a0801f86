"""Checking the claims: training what they need, measuring each setting and judging it (one Row per claim and
setting), under one kernel or both."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from normbench.claims.measures import Results, run_values, seed_values
from normbench.claims.schema import (
    COMPARISONS,
    Claim,
    ClaimsBook,
    Setting,
    Source,
    check_references,
    load_claims,
    matches,
)
from normbench.claims.statistics import Verdict, compare_verdict, flat_verdict, num, threshold_verdict
from normbench.config import ConfigError, Experiment
from normbench.labels import filter_text
from normbench.registry import KERNEL_NAMES
from normbench.safe import esc

VERDICTS = ("supported", "not supported", "inconclusive", "depends on rounding", "not measured yet")


@dataclass
class Row:
    claim_id: str
    claim: str
    source: str
    source_link: str | None
    setting: str
    experiment: str
    measure: str
    criterion: str
    measurement: str
    verdict: str
    reason: str
    values: dict[str, list[float | None]] = field(default_factory=dict)  # group -> per-seed values
    by_kernel: dict[str, dict[str, str]] = field(default_factory=dict)  # --kernel both: each kernel's outcome


def evaluate(s: Setting, res: Results) -> tuple[Verdict, str, dict[str, list[float]]]:
    """The verdict, the measurement as text (mean +- std [min, max] over seeds per group) and the per-seed values
    of one setting, from the results of its experiment."""
    crit = s.criterion
    runs = res.runs[matches(res.runs, s.where)]
    values = run_values(s.measure, runs, res)
    if crit.kind in COMPARISONS:
        sides = {}
        for name, flt in (("a", crit.a), ("b", crit.b)):
            mine = matches(runs, flt)
            sides[name] = (flt, runs[mine], seed_values(s.measure, runs[mine], values[mine]))
        labels = (filter_text(crit.a), filter_text(crit.b))
        verdict = compare_verdict(crit.kind, sides["a"][2].to_numpy(), sides["b"][2].to_numpy(), crit.margin, labels)
        text = "; ".join(f"{filter_text(flt)}: {describe_values(v, r)}" for flt, r, v in sides.values())
        return verdict, text, {filter_text(flt): _listed(v) for flt, _, v in sides.values()}
    if crit.kind == "flat":
        points, texts = {}, []
        for x, grp in runs.groupby(crit.over, sort=True):
            v = seed_values(s.measure, grp, values[grp.index])
            points[x] = v.to_numpy()
            texts.append(f"{x}: {num(v.mean())}")
        verdict = flat_verdict(points, crit.below)
        return (
            verdict,
            f"means by {crit.over.split('.')[-1]}: " + ", ".join(texts),
            {f"{crit.over}={x}": _listed(pd.Series(v)) for x, v in points.items()},
        )
    v = seed_values(s.measure, runs, values)
    verdict = threshold_verdict(v.to_numpy(), crit.at_least, crit.at_most)
    return verdict, describe_values(v, runs), {filter_text(s.where): _listed(v)}


def describe_values(v: pd.Series, runs: pd.DataFrame | None = None) -> str:
    """'0.84 +- 0.012 [0.83, 0.85], 3 seeds', plus how many of the runs diverged or failed."""
    x = v.to_numpy(float)
    finite = x[np.isfinite(x)]
    parts = []
    if len(finite):
        sd = f" +- {num(finite.std(ddof=1))}" if len(finite) > 1 else ""
        parts.append(f"{num(finite.mean())}{sd} [{num(finite.min())}, {num(finite.max())}]")
    if np.isinf(x).any():
        parts.append(f"{int(np.isinf(x).sum())} inf")
    if np.isnan(x).any():
        parts.append(f"{int(np.isnan(x).sum())} without a number")
    text = ", ".join(parts) + f" ({len(x)} seeds"
    if runs is not None and len(runs):
        for status in ("diverged", "failed", "missing"):
            n = int((runs.status == status).sum())
            if n:
                text += f", {n}/{len(runs)} runs {status}"
    return text + ")"


def _listed(v: pd.Series) -> list[float | None]:
    return [None if math.isnan(x) else float(x) for x in v.to_numpy(float)]


def not_measured_row(c: Claim, src: Source) -> Row:
    return Row(
        c.id, c.claim, src.label(), src.link, "-", "-", "-", "-", c.reason or "", "not measured yet", c.reason or ""
    )


KERNELS = ("auto", *KERNEL_NAMES, "both")


def check_claims(
    book: ClaimsBook,
    out: Path | str = "results",
    *,
    quick: bool = False,
    only: list[str] | None = None,
    experiments: list[str] | None = None,
    kernel: str = "auto",
    force: bool = False,
    console: Console | None = None,
) -> list[Row]:
    """Train the runs the claims need that are not finished yet (OUT/<experiment>/, resumed as `normbench run`
    does; `force`: retrain them all), then measure every setting. `experiments`: only the settings of these
    experiments (the demo's). `kernel` 'auto' trains as `normbench run` does; 'written-out' or 'autograd' into
    OUT/<experiment>-<kernel>/; 'both' as 'auto' and again with 'autograd' wherever 'auto' writes some runs out,
    and a setting whose verdict differs between the two roundings gets the verdict 'depends on rounding' with
    both outcomes. ConfigError for a wrong claims file, config, kernel or --out, before any training."""
    from normbench.results import DamagedResults

    console = console or Console(stderr=True)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if kernel not in KERNELS:
        raise ConfigError(f"--kernel {kernel!r}: choose from {', '.join(KERNELS)}")
    claims = book.select(only)
    if experiments is not None:
        claims = [c.of_experiments(experiments) for c in claims if c.of_experiments(experiments).settings]
    exps = check_references(book, claims, quick)
    results = _train(book, claims, exps, out, quick, kernel, force, console)
    rows = []
    for c in claims:
        src = book.sources[c.source]
        if c.status != "testable":
            rows.append(not_measured_row(c, src))
            continue
        for s in c.settings:
            try:
                rows.append(_row(book, c, src, s, results[s.experiment], quick))
            except DamagedResults as e:
                raise ConfigError(str(e)) from None
    return rows


def _train(
    book: ClaimsBook,
    claims: list[Claim],
    exps: dict[str, Experiment],
    out: Path,
    quick: bool,
    kernel: str,
    force: bool,
    console: Console,
) -> dict[str, dict[str, Results]]:
    """Each experiment's results by kernel label (the kernels that computed its runs: 'written-out', 'autograd',
    or both names joined when a grid mixes them)."""
    from normbench.engine import PlanError, kernel_for
    from normbench.store import ExperimentStore
    from normbench.sweep import SweepOptions, run_experiment

    for key, exp in exps.items():  # a kernel that cannot train an experiment is refused before any training
        try:
            for r in exp.runs if kernel in KERNEL_NAMES else []:
                kernel_for(r.config, kernel)
        except PlanError as e:
            raise ConfigError(f"claims experiment {key!r}: {e}") from None
    results: dict[str, dict[str, Results]] = {}
    for i, (key, exp) in enumerate(exps.items(), 1):
        users = [c.id for c in claims if any(s.experiment == key for s in c.settings)]
        console.print(
            f"[bold]claims: experiment {i}/{len(exps)}[/] {esc(key)} (for {esc(', '.join(users))})", highlight=False
        )
        kernels = [kernel] if kernel != "both" else ["auto"]
        if kernel == "both" and any(kernel_for(r.config) == "written-out" for r in exp.runs):
            kernels.append("autograd")  # elsewhere 'auto' is autograd already: the same computations
        results[key] = {}
        for k in kernels:
            start = time.monotonic()
            e = exp if k == "auto" else book.experiment(key, quick, k)
            table = run_experiment(e, out, SweepOptions(kernel=k, force=force), console=console)
            used = "+".join(sorted(set(table["engine.kernel"].dropna()))) or k
            results[key][used] = Results(table, exp_dir=ExperimentStore(out, e.name).dir)
            console.print(
                f"  {esc(e.name)}: {len(table)} runs ready in {time.monotonic() - start:.0f} s", highlight=False
            )
    return results


def _row(book: ClaimsBook, c: Claim, src: Source, s: Setting, by_kernel: dict[str, Results], quick: bool) -> Row:
    """One setting's row: its verdict under each kernel; one verdict when they agree, else 'depends on rounding'
    with every kernel's verdict and reason."""
    judged = {k: evaluate(s, res) for k, res in by_kernel.items()}
    (verdict, text, values), *others = judged.values()
    outcomes = {k: {"verdict": v.verdict, "reason": v.reason, "measurement": t} for k, (v, t, _) in judged.items()}
    verdict_text, reason = verdict.verdict, verdict.reason
    if any(v.verdict != verdict.verdict for v, _, _ in others):
        verdict_text = "depends on rounding"
        reason = "; ".join(f"{k}: {o['verdict']} ({o['reason']})" for k, o in outcomes.items())
    elif others:
        reason += f"; the same under {' and '.join(outcomes)}"
    return Row(
        c.id,
        c.claim,
        src.label(),
        src.link,
        s.setting,
        book.folder(s.experiment, quick),
        s.measure.describe(),
        s.criterion.describe(),
        text,
        verdict_text,
        reason,
        values,
        outcomes if len(outcomes) > 1 else {},
    )


def verdicts_for(exp_dir: Path, runs: pd.DataFrame | None = None) -> tuple[list[Row], str]:
    """The packaged claims file's verdicts on an experiment folder that `normbench claims` (or the demo) trained:
    the settings of the claims experiment whose folder has this name, judged on the folder's runs by the rules of
    `normbench claims`, with nothing trained. ([], why) when the claims file says nothing about the folder or the
    folder lacks finished runs those settings need (for `normbench report`); (rows, '') otherwise."""
    from normbench.results import FINISHED, load_runs

    book = load_claims()
    name = Path(exp_dir).name
    found = [
        (key, quick, kernel)
        for key in book.experiments
        for quick in (False, True)
        for kernel in (None, *KERNEL_NAMES)
        if book.folder(key, quick, kernel) == name and (not quick or book.experiments[key].quick)
    ]
    claims = [c.of_experiments([k for k, _, _ in found]) for c in book.claims]
    claims = [c for c in claims if c.settings and c.status == "testable"]
    if not claims:
        return [], ""
    key, quick, kernel = found[0]
    exp = book.experiment(key, quick, kernel)
    runs = load_runs(exp_dir) if runs is None else runs
    done = set(runs.run_id[runs.status.isin(FINISHED)])
    missing = [r.run_id for r in exp.runs if r.run_id not in done]
    if missing:
        why = (
            f"the claims file judges {len(claims)} claims on the runs of `normbench claims`"
            f"{' --quick' if quick else ''} in a folder named {name}; {len(missing)} of its {len(exp.runs)} runs "
            "are not finished here, so no verdict is given"
        )
        return [], why
    res = Results(runs[runs.run_id.isin({r.run_id for r in exp.runs})].reset_index(drop=True), exp_dir=exp_dir)
    label = "+".join(sorted(set(res.runs["engine.kernel"].dropna()))) or "runs"
    rows = [_row(book, c, book.sources[c.source], s, {label: res}, quick) for c in claims for s in c.settings]
    return rows, ""
