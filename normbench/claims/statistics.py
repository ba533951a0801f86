"""The verdict rules: a threshold or a comparison judged by the confidence interval of the mean over seeds
(Student's and Welch's t), a flat curve by its two extreme means; each verdict with its reason in words."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from normbench.claims.measures import Passing

MIN_SEEDS = 3  # seeds with a number needed on each side of a comparison (and for a threshold)


CONFIDENCE = 0.95  # of the intervals every verdict reads


@dataclass
class Verdict:
    verdict: str
    reason: str


def _t(df: float) -> float:
    """The two-sided CONFIDENCE quantile of Student's t with df degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, max(df, 1.0)))


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a minus mean of b, and the half-width of its CONFIDENCE interval (Welch's t)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    denom = va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)
    df = (va + vb) ** 2 / denom if denom > 0 else len(a) + len(b) - 2
    return float(a.mean() - b.mean()), _t(df) * se


def threshold_verdict(values: np.ndarray, at_least: float | None = None, at_most: float | None = None) -> Verdict:
    """Per-seed values against a threshold: the CONFIDENCE interval of their mean (Student's t) decides, as the
    interval of a difference decides a comparison. Supported when it lies entirely on the passing side (and every
    seed has a number), not supported when entirely on the other side, else inconclusive: a mean within seed
    noise of the threshold is no verdict. A seed without a number (NaN: a diverged run's dead fraction) does not
    pass: none with a number is not supported. Infinite values have no mean: then every seed must pass (supported)
    or none (not supported)."""
    v = np.asarray(values, float)
    bound = f">= {num(at_least)}" if at_least is not None else f"<= {num(at_most)}"
    if len(v) < MIN_SEEDS:
        return Verdict("inconclusive", f"{len(v)} seeds, fewer than {MIN_SEEDS}")
    nan = int(np.isnan(v).sum())
    if nan == len(v):
        return Verdict("not supported", f"no seed has a number ({nan} of {nan}), so none is {bound}")
    passing = Passing(at_least=at_least, at_most=at_most)
    finite = v[np.isfinite(v)]
    if np.isinf(v).any() or len(finite) < MIN_SEEDS:
        passes = np.array([passing.test(x) for x in v])
        why = "infinite values: no mean" if np.isinf(v).any() else f"{len(finite)} seeds with a number"
        if passes.all():
            return Verdict("supported", f"every seed {bound} ({len(v)} of {len(v)}; {why})")
        if not passes.any():
            return Verdict("not supported", f"no seed {bound} ({why})")
        return Verdict("inconclusive", f"{int(passes.sum())} of {len(v)} seeds {bound} ({why})")
    mean = float(finite.mean())
    half = _t(len(finite) - 1) * float(finite.std(ddof=1)) / math.sqrt(len(finite))
    lo, hi = mean - half, mean + half
    ci = f"{CONFIDENCE:.0%} interval of the mean over {len(finite)} seeds [{num(lo)}, {num(hi)}]"
    good, bad = (lo >= at_least, hi < at_least) if at_least is not None else (hi <= at_most, lo > at_most)
    if bad:
        return Verdict("not supported", f"{ci}: not {bound}")
    if good and nan:
        return Verdict("inconclusive", f"{ci} is {bound}, but {nan} of {len(v)} seeds have no number")
    if good:
        return Verdict("supported", f"{ci}: {bound}")
    edge = at_least if at_least is not None else at_most
    return Verdict("inconclusive", f"{ci} contains {num(edge)}: within seed noise")


def compare_verdict(
    kind: str, a: np.ndarray, b: np.ndarray, margin: float = 0.0, names: tuple[str, str] = ("a", "b")
) -> Verdict:
    """kind 'less_than' (claim: a < b by more than margin), 'greater_than' (a > b), 'equal_within' (|a - b| <
    margin), 'not_less_than' (a >= b - margin: a is not below b by more than the margin) or 'not_greater_than'
    (a <= b + margin), from the per-seed values of each side (NaN dropped). `names`: the two sides as the reason
    text names them (the groups' labels)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if min(len(a), len(b)) < MIN_SEEDS:
        return Verdict("inconclusive", f"{len(a)} and {len(b)} seeds with a number, fewer than {MIN_SEEDS}")
    m = f" by more than {num(margin)}" if margin else ""

    def diff(i: int, j: int) -> str:
        one = [n if n in ("a", "b") else f"({n})" for n in names]
        return f"{one[i]} - {one[j]}"

    if kind == "equal_within":
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return Verdict("inconclusive", "infinite values: no difference of means")
        d, half = _welch(a, b)
        ci = f"{CONFIDENCE:.0%} interval of {diff(0, 1)} [{num(d - half)}, {num(d + half)}]"
        if abs(d) + half < margin:
            return Verdict("supported", f"{ci} lies within +-{num(margin)}")
        if abs(d) - half > margin:
            return Verdict("not supported", f"{ci} lies outside +-{num(margin)}")
        return Verdict("inconclusive", f"{ci} is not within +-{num(margin)}")
    big, small = (b, a) if kind in ("less_than", "not_greater_than") else (a, b)
    if kind.startswith("not_"):  # the claim: big - small > -margin (big is not worse by more than the margin)
        m = f" or trails it by less than {num(margin)}"
        margin = -margin
    # else the claim: big - small > margin
    if not (np.isfinite(big).all() and np.isfinite(small).all()):
        if big.min() - small.max() > margin:
            return Verdict("supported", f"every seed of one side beats every seed of the other{m} (infinite values)")
        if big.max() - small.min() < margin:
            return Verdict("not supported", f"no seed of one side beats any seed of the other{m} (infinite values)")
        return Verdict("inconclusive", "the seeds' ranges overlap (infinite values: no difference of means)")
    d, half = _welch(big, small)
    if kind in ("less_than", "not_greater_than"):
        ci = f"{CONFIDENCE:.0%} interval of {diff(1, 0)}: [{num(d - half)}, {num(d + half)}]"
    else:
        ci = f"{CONFIDENCE:.0%} interval of {diff(0, 1)}: [{num(d - half)}, {num(d + half)}]"
    if d - half > margin:
        return Verdict("supported", f"{ci}, above {num(margin)}")
    if d + half < margin:
        return Verdict("not supported", f"{ci}, below {num(margin)}")
    return Verdict("inconclusive", f"{ci} contains {num(margin)}: within seed noise")


def flat_verdict(points: dict[Any, np.ndarray], below: float) -> Verdict:
    """points: axis value -> per-seed values. Flat: the means vary by less than `below` along the axis."""
    pts = {x: np.asarray(v, float)[~np.isnan(np.asarray(v, float))] for x, v in points.items()}
    short = [x for x, v in pts.items() if len(v) < MIN_SEEDS]
    if short:
        return Verdict("inconclusive", f"fewer than {MIN_SEEDS} seeds with a number at {short}")
    if not all(np.isfinite(v).all() for v in pts.values()):
        if any(np.isfinite(v).all() for v in pts.values()) and any((~np.isfinite(v)).all() for v in pts.values()):
            return Verdict("not supported", "infinite at some points, finite at others")
        return Verdict("inconclusive", "infinite values: no means")
    means = {x: v.mean() for x, v in pts.items()}
    hi, lo = max(means, key=means.get), min(means, key=means.get)
    r, half = _welch(pts[hi], pts[lo])
    interval = f"{CONFIDENCE:.0%} interval [{num(r - half)}, {num(r + half)}]"
    ci = f"largest minus smallest mean {num(r)} ({hi} vs {lo}), {interval}"
    if r + half < below:
        return Verdict("supported", f"{ci}, below {num(below)}")
    if r - half > below:
        return Verdict("not supported", f"{ci}, above {num(below)}")
    return Verdict("inconclusive", f"{ci} contains {num(below)}")


def num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"
