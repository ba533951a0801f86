"""What `normbench claims` shows and writes: the table on the terminal, claims.md and claims.json, the figures."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from normbench.claims.check import VERDICTS, Row, check_claims
from normbench.claims.schema import ClaimsBook, load_claims, matches
from normbench.claims.statistics import CONFIDENCE, MIN_SEEDS
from normbench.config import ConfigError
from normbench.safe import esc

STYLE = {
    "supported": "green",
    "not supported": "red",
    "inconclusive": "yellow",
    "depends on rounding": "magenta",
    "not measured yet": "dim",
}


def claims_table(rows: list[Row], title: str = "") -> Table:
    table = Table(title=Text(title), title_justify="left", header_style="bold", show_lines=True)
    for name in ("claim", "source", "setting", "measurement", "verdict"):
        table.add_column(name, overflow="fold")
    previous = None
    for r in rows:
        first = r.claim_id != previous
        previous = r.claim_id
        table.add_row(
            f"[bold]{esc(r.claim_id)}[/]\n{esc(r.claim)}" if first else "",
            esc(r.source) if first else "",
            esc(r.setting),
            f"{esc(r.measurement)}\n[dim]{esc(r.measure)}, {esc(r.criterion)}[/]"
            if r.measure != "-"
            else esc(r.measurement),
            f"[{STYLE[r.verdict]}]{r.verdict}[/]\n[dim]{esc(r.reason)}[/]" if r.measure != "-" else esc(r.verdict),
        )
    return table


def counts(rows: list[Row]) -> str:
    n = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    return ", ".join(f"{k} {v}" for k, v in n.items() if v)


def markdown(rows: list[Row], quick: bool, seconds: float | None = None, kernel: str = "auto") -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| claim | source | setting | measurement (mean +- std [min, max] over seeds) | verdict | why |",
        "|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        first = r.claim_id != previous
        previous = r.claim_id
        src = f"[{r.source}]({r.source_link})" if r.source_link else r.source
        lines.append(
            "| "
            + " | ".join(
                cell(x)
                for x in (
                    f"**{r.claim_id}**: {r.claim}" if first else "",
                    src if first else "",
                    r.setting,
                    r.measurement if r.measure == "-" else f"{r.measurement}; {r.measure}, {r.criterion}",
                    f"**{r.verdict}**",
                    r.reason if r.measure != "-" else "",
                )
            )
            + " |"
        )
    mode = "quick" if quick else "full"
    took = f" in {seconds / 60:.1f} min" if seconds is not None else ""
    options = (" --quick" if quick else "") + (f" --kernel {kernel}" if kernel != "auto" else "")
    head = f"`normbench claims{options}` ({mode} mode{took}): {counts(rows)}.\n\n"
    return head + "\n".join(lines) + "\n"


def write_claims_files(
    rows: list[Row], out: Path, quick: bool, seconds: float | None = None, kernel: str = "auto"
) -> list[Path]:
    """OUT/claims.md and OUT/claims.json."""
    from normbench.store import write_text_atomic
    from normbench.version import __version__

    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "claims.md", out / "claims.json"
    write_text_atomic(md, markdown(rows, quick, seconds, kernel))
    doc = {
        "mode": "quick" if quick else "full",
        "kernel": kernel,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "normbench": __version__,
        "min_seeds": MIN_SEEDS,
        "confidence": CONFIDENCE,
        "claims": [asdict(r) for r in rows],
    }
    write_text_atomic(js, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return [md, js]


def update_claims_file(
    path: Path, rows: list[Row], book: ClaimsBook, checked: list[str], quick: bool, seconds: float, kernel: str
) -> Path:
    """Put the rows of the claims just checked (ids `checked`) into an earlier check's claims.json of the same mode
    and kernel: their old rows go, the others stay, every row in the claims file's order (a row of a claim the file
    no longer has is dropped). Its `seconds` become the sum of both checks', and `updates` lists each partial check
    (the claims, when, how long), so the file still says how its rows were measured. ConfigError for a file of
    another mode or kernel, or one that is not a claims.json."""
    from normbench.store import write_text_atomic

    mode = "quick" if quick else "full"
    try:
        doc = json.loads(Path(path).read_text())
        old = [Row(**r) for r in doc["claims"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--update {path}: not a claims.json of `normbench claims` ({e})") from None
    if doc.get("mode") != mode or doc.get("kernel", "auto") != kernel:
        raise ConfigError(
            f"--update {path}: its rows are of a {doc.get('mode')} check with --kernel {doc.get('kernel', 'auto')}, "
            f"these of a {mode} check with --kernel {kernel}: one table mixes no two"
        )
    order = {c.id: i for i, c in enumerate(book.claims)}
    kept = [r for r in old if r.claim_id in order and r.claim_id not in checked]
    merged = sorted(kept + rows, key=lambda r: order[r.claim_id])  # stable: a claim's settings keep their order
    now = datetime.now(UTC).isoformat(timespec="seconds")
    doc["updates"] = [*doc.get("updates", []), {"claims": list(checked), "finished_at": now, "seconds": seconds}]
    doc["seconds"] = (doc.get("seconds") or 0.0) + seconds
    doc["claims"] = [asdict(r) for r in merged]
    write_text_atomic(Path(path), json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return Path(path)


def draw_figures(
    book: ClaimsBook, out: Path, quick: bool, experiments: set[str], progress: Console, kernel: str = "auto"
) -> list[Path]:
    """The claims' figures whose experiment was checked, each drawn from OUT/<experiment>/ into OUT/figures/ as
    `normbench plot` draws it (docs/claims.md's figures are these, from the full check). A figure the quick variant
    of an experiment does not give (a final_vs figure needs 3 values of its axis) is left out with a note."""
    from normbench.views.data import NoSuchFigure, PlotError
    from normbench.views.render import draw_figure

    paths = []
    for f in book.figures:
        if f.experiment not in experiments:
            continue
        exp_dir = Path(out) / book.folder(f.experiment, quick, None if kernel in ("auto", "both") else kernel)
        where = (lambda runs, f=f: matches(runs, f.where)) if f.where else None
        try:
            paths.append(draw_figure(exp_dir, f.figure, Path(out) / "figures" / f.file, compare=f.compare, where=where))
        except NoSuchFigure as e:
            if not (quick and book.experiments[f.experiment].quick):
                raise ConfigError(f"figure {f.file}: {e}") from None
            progress.print(
                f"  {f.file}: not drawn in quick mode ({exp_dir.name} gives no {f.figure})",
                highlight=False,
                markup=False,
            )
        except PlotError as e:
            raise ConfigError(f"figure {f.file}: {e}") from None
    if paths:
        progress.print(f"-> {Path(out) / 'figures'} ({len(paths)} figures)", highlight=False, markup=False)
    return paths


def run_claims(
    out: Path,
    *,
    quick: bool = False,
    only: list[str] | None = None,
    path: Path | None = None,
    kernel: str = "auto",
    update: Path | None = None,
    console: Console,
    progress: Console,
) -> list[Row]:
    """`normbench claims`: load, run, measure, print the table, write claims.md and claims.json, draw the figures;
    with `update`, also put the checked claims' rows into that earlier claims.json (update_claims_file)."""
    start = time.monotonic()
    book = load_claims(path)
    if update is not None and not only:
        raise ConfigError("--update replaces the rows of the claims named by --only; without --only, write OUT afresh")
    if update is not None and not Path(update).is_file():
        raise ConfigError(f"--update {update}: no such file")
    rows = check_claims(book, out, quick=quick, only=only, kernel=kernel, console=progress)
    seconds = time.monotonic() - start
    console.print(claims_table(rows, title=f"claims ({'quick' if quick else 'full'} mode): {counts(rows)}"))
    for p in write_claims_files(rows, Path(out), quick, seconds, kernel):
        progress.print(f"-> {p}", highlight=False, markup=False)
    if update is not None:
        ids = [c.id for c in book.select(only)]
        progress.print(f"-> {update_claims_file(update, rows, book, ids, quick, seconds, kernel)}", highlight=False)
    checked = {s.experiment for c in book.select(only) for s in c.settings}
    draw_figures(book, Path(out), quick, checked, progress, kernel)
    progress.print(f"claims checked in {time.monotonic() - start:.0f} s", highlight=False)
    return rows
