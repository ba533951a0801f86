"""`normbench claims`: every testable claim of the source articles, checked against numbers normbench measures.

    book = load_claims()                                   # configs/claims.yaml, validated
    rows = check_claims(book, out="results", quick=True)   # trains what is missing, one verdict per setting
    write_claims_files(rows, Path("results"), quick=True, seconds=93.0)   # results/claims.md, results/claims.json
    draw_figures(book, Path("results"), True, {"lr_range"}, console)  # results/figures/: the claims' figures

The claims are data (configs/claims.yaml): for each, the experiment that tests it (a packaged config with
overrides), the runs to look at, the quantity measured and the criterion. This module only knows a few
quantities and seven kinds of criterion; every verdict is computed from the results tables.

How a verdict is decided (docs/claims.md says it for readers):
- Each seed gives one number (a run's quantity, or, with `over`, one number from the runs along a grid axis).
  A setting needs MIN_SEEDS seeds with a number on each side it compares; fewer: inconclusive.
- threshold: the CONFIDENCE interval of the mean over seeds (Student's t): supported when it lies entirely on the
  passing side, not supported when entirely on the other, else inconclusive. A seed without a number (a diverged
  run's dead fraction) does not pass; infinite values have no mean, and then every seed must pass (or none).
- less_than / greater_than / equal_within: the 95% confidence interval of the difference of the two means
  (Welch's t). Supported when it lies entirely beyond `margin` in the claimed direction (for equal_within:
  entirely inside +-margin), not supported when it lies entirely on the other side, else inconclusive: an effect
  within seed noise is never supported. not_less_than / not_greater_than claim that a is not worse than b by more
  than the margin (a >= b - margin; a <= b + margin): the same interval, against -margin. Infinite values (a
  diverged run's loss, a threshold never reached) have no mean: then the seeds' ranges decide, supported only
  when every seed of one side beats every seed of the other.
- flat: the largest minus the smallest mean along the axis, with the 95% interval from those two points'
  standard errors: supported when the interval lies below `below`, not supported when above it.
- with --kernel both, a setting judged on the runs of both kernels (two float32 roundings of the same runs) whose
  verdicts differ is 'depends on rounding', with both.

The package, in the order of the pipeline: schema.py (the claims file and its checks), measures.py (the quantities,
one table), statistics.py (the verdict rules), check.py (training what the claims need and judging each setting),
output.py (the terminal table, claims.md and claims.json, the figures).
"""

from normbench.claims.check import KERNELS, VERDICTS, Row, check_claims, evaluate, verdicts_for
from normbench.claims.measures import QUANTITIES, QUANTITY, Measure, Quantity, Results, run_values, seed_values
from normbench.claims.output import STYLE, claims_table, counts, draw_figures, markdown, run_claims, write_claims_files
from normbench.claims.schema import Claim, ClaimsBook, Setting, Source, claims_path, load_claims
from normbench.claims.statistics import (
    CONFIDENCE,
    MIN_SEEDS,
    Verdict,
    compare_verdict,
    flat_verdict,
    threshold_verdict,
)

__all__ = [
    "CONFIDENCE",
    "KERNELS",
    "MIN_SEEDS",
    "QUANTITIES",
    "QUANTITY",
    "STYLE",
    "VERDICTS",
    "Claim",
    "ClaimsBook",
    "Measure",
    "Quantity",
    "Results",
    "Row",
    "Setting",
    "Source",
    "Verdict",
    "check_claims",
    "claims_path",
    "claims_table",
    "compare_verdict",
    "counts",
    "draw_figures",
    "evaluate",
    "flat_verdict",
    "load_claims",
    "markdown",
    "run_claims",
    "run_values",
    "seed_values",
    "threshold_verdict",
    "verdicts_for",
    "write_claims_files",
]
