"""The numbers of README.md and docs/ are rendered from committed results, never typed: each generated block of a
document, between `<!-- begin: FILE -->` and `<!-- end: FILE -->`, is what normbench renders from FILE, a result
a command wrote (demo.json of `normbench demo dead-neurons`, claims.json of `normbench claims`, the JSON of
`normbench summary --by ... --format json`), committed beside the document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from normbench.claims import Row, counts, markdown
from normbench.demo import markdown as demo_markdown
from normbench.views.summary import aggregate_markdown

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- begin: (?P<file>\S+) -->\n(?P<text>.*?)<!-- end: (?P=file) -->", re.DOTALL)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(file: str) -> str:
    """What normbench renders from a committed result (a path from the repository's root)."""
    doc = json.loads((ROOT / file).read_text())
    name = Path(file).name
    if name == "demo.json":
        return demo_markdown(doc)
    if name == "claims.json":
        rows = [Row(**r) for r in doc["claims"]]
        return markdown(rows, doc["mode"] == "quick", doc["seconds"], doc.get("kernel", "auto"))
    return aggregate_markdown(doc)


def blocks() -> list[tuple[Path, str, str]]:
    return [(d, m["file"], m["text"]) for d in DOCUMENTS for m in BLOCK.finditer(d.read_text())]


def test_every_generated_block_is_its_result_rendered():
    found = blocks()
    assert {f for _, f, _ in found} >= {"docs/demo.json", "docs/claims.json"}
    for document, file, text in found:
        assert text == render(file), f"{document.name}: the block of {file} is not what normbench renders from it"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_blocks_are_closed_and_name_committed_files(document):
    text = document.read_text()
    assert text.count("<!-- begin: ") == text.count("<!-- end: ") == len(BLOCK.findall(text))
    for m in BLOCK.finditer(text):
        assert (ROOT / m["file"]).is_file(), m["file"]


def test_readme_counts_of_verdicts_are_the_claims_results():
    doc = json.loads((ROOT / "docs" / "claims.json").read_text())
    rows = [Row(**r) for r in doc["claims"]]
    readme = (ROOT / "README.md").read_text()
    assert f"({counts(rows)})" in readme


def test_the_demo_and_the_claims_check_state_the_same_verdicts():
    """One truth: each verdict the README's demo section states is the claims table's for that claim and setting."""
    demo = json.loads((ROOT / "docs" / "demo.json").read_text())
    claims = json.loads((ROOT / "docs" / "claims.json").read_text())
    table = {(r["claim_id"], r["experiment"], r["setting"]): r["verdict"] for r in claims["claims"]}
    stated = [
        (r["claim_id"], r["experiment"], r["setting"], r["verdict"]) for e in demo["experiments"] for r in e["claims"]
    ]
    assert len(stated) >= 15
    for claim, experiment, setting, verdict in stated:
        assert table[claim, experiment, setting] == verdict, (claim, experiment)


def _written(m: re.Match) -> str:
    if not (ROOT / m["file"]).is_file():
        print(f"{m['file']}: not there, its block left as it is")
        return m[0]
    return f"<!-- begin: {m['file']} -->\n{render(m['file'])}<!-- end: {m['file']} -->"


if __name__ == "__main__":  # python tests/test_docs.py: write every block again from its committed result
    for document in DOCUMENTS:
        text = document.read_text()
        new = BLOCK.sub(_written, text)
        if new != text:
            document.write_text(new)
            print(f"{document.relative_to(ROOT)}: blocks written")
