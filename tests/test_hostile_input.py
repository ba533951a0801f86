"""Hostile or odd input, one table: configs and data folders someone else sent. Each row runs the real CLI in a
subprocess (`python -m normbench ...`) under a memory limit (RLIMIT_AS, AS_LIMIT) and a wall-clock timeout
(TIMEOUT_S, a generous bound on "refused quickly": the refusals take about half a second here, the bound is
there so that a regression to expanding a bomb fails instead of hanging), and asserts the exit code, exactly one
line of output for a refusal (with what it must say), no traceback, that no code from the data ran, and that a
results folder written before is byte for byte as it was."""

from __future__ import annotations

import os
import pickle
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from normbench.cli import app
from tests.conftest import TINY, finished_sweep, snapshot

AS_LIMIT = 2 << 30  # 2 GiB of address space: torch's import needs under 1 GiB here; a bomb expanded needs 3-5 GB
TIMEOUT_S = 60

ROOT = Path(__file__).resolve().parent.parent


class _Shell:
    """A pickle that, when loaded by pickle.load, runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bomb(levels: int = 9) -> str:
    """The 'billion laughs' in YAML: 10**levels strings from a few hundred bytes."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _flow_bomb(levels: int = 9) -> str:
    """The same in one line of flow style, for --set: [&l0 [lol, ...], &l1 [*l0, ...], ...]."""
    parts = ["&l0 [" + ", ".join(["lol"] * 10) + "]"]
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """One prepared folder: a finished tiny sweep in results/, and every hostile file the table names."""
    root = tmp_path_factory.mktemp("hostile")
    tiny = {**TINY, "seeds": [1], "grid": {"model.norm": ["none", "batch"]}}
    finished_sweep(root, tiny)

    def config(name: str, text: str | bytes | dict) -> None:
        path = root / name
        if isinstance(text, dict):
            text = yaml.safe_dump(text, allow_unicode=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    small = {"data": {"name": "quadratic", "n": 16}, "model": {"depth": 1, "width": 4}, "train": {"steps": 2}}
    evil = root / "cifar_evil"
    evil.mkdir()
    for name in ("data_batch_1", "test_batch"):
        (evil / name).write_bytes(pickle.dumps({b"data": _Shell(root / "PWNED"), b"labels": [0]}))
    config("cifar_evil.yaml", {**small, "name": "c", "data": {"name": "cifar10", "path": str(evil)}})
    config("bomb.yaml", "name: b\n" + _bomb() + "description: *l8\n")
    config("bomb_grid.yaml", "name: b\n" + _bomb() + "grid:\n  data.path: *l8\n")
    config("recursive.yaml", "name: r\ndescription: &a [1, *a]\n")
    config("deep.yaml", "name: d\ndescription: " + "[" * 500 + "]" * 500 + "\n")
    config("large.yaml", "name: l\ndescription: '" + "x" * 2_000_000 + "'\n")
    config("seeds.yaml", {**small, "name": "s", "seeds": "range(1, 1000000000)"})
    axes = {k: "linspace(0.1, 1, 1000)" for k in ("train.lr", "model.weight_init.std", "data.noise")}
    config("linspace.yaml", {**small, "name": "g", "grid": axes})
    config("twelve.yaml", {**small, "name": "t", "seeds": "range(12)"})
    config("markup.yaml", {**small, "name": "m", "grid": {"data.path": ["a[/]b", "[old]", "a$b$"]}})
    config("cnn.yaml", {**small, "name": "c", "model": {"name": "cnn"}})
    config("python_tag.yaml", "name: p\ndescription: !!python/object/apply:os.system ['touch PWNED']\n")
    config("huge_lr.yaml", "name: h\ntrain: {lr: 1e400}\n")
    config("huge_seed.yaml", "name: h\nseeds: [1e30]\n")
    config("huge_int.yaml", f"name: h\ntrain: {{batch_size: {10**100}}}\n")
    config("unicode_name.yaml", {**small, "name": "résumé"})
    config("unicode_values.yaml", {**small, "name": "u", "description": "résumé ✓ 日本語 [old] a$b$"})
    config("dotdot_name.yaml", {**small, "name": ".."})
    config("slash_name.yaml", {**small, "name": "a/../../b"})
    (root / "loop").symlink_to(root / "loop")
    config("loop.yaml", {**small, "name": "l", "data": {"name": "mnist", "path": str(root / "loop")}})
    config("file_path.yaml", {**small, "name": "f", "data": {"name": "mnist", "path": str(root / "tiny.yaml")}})
    config("empty.yaml", "")
    config("list.yaml", "- name: a\n- name: b\n")
    config("latin1.yaml", "name: x\ndescription: caf\xe9\n".encode("latin-1"))
    config("long_key.yaml", {**small, "name": "k", "x" * 10_000: 1})
    config("long_value.yaml", {**small, "name": "k", "model": {"norm": "y" * 10_000}})
    import shutil

    shutil.copytree(root / "results", root / "sent")  # a results folder someone sent, its config a bomb
    (root / "sent" / "tiny" / "config.yaml").write_text("name: tiny\n" + _bomb() + "description: *l8\n")
    return root


# id -> (argv after `normbench`, exit code, a regex the one line must match; None: success, any output)
# {root} is the prepared folder; every `run` writes to {root}/results, which holds a finished sweep.
TABLE = {
    "pickle that calls os.system (validate)": (
        ["validate", "{root}/cifar_evil.yaml"],
        2,
        r"data_batch_1: refused: the file asks to load (posix|os)\.system",
    ),
    "pickle that calls os.system (run)": (
        ["run", "{root}/cifar_evil.yaml", "--out", "{root}/results"],
        2,
        r"refused: the file asks to load (posix|os)\.system",
    ),
    "alias bomb in description": (["validate", "{root}/bomb.yaml"], 2, r"refused: .*more than 100000 values"),
    "alias bomb as a grid axis": (
        ["run", "{root}/bomb_grid.yaml", "--out", "{root}/results"],
        2,
        r"refused: .*alias bomb",
    ),
    "alias bomb in --set": (
        ["validate", "{root}/tiny.yaml", "--set", "description=" + _flow_bomb()],
        2,
        r"--set 'description=\[&l0 .*…: refused: .*alias bomb",
    ),
    "recursive alias": (["validate", "{root}/recursive.yaml"], 2, r"refers to a list or mapping that contains it"),
    "nesting 500 deep": (["validate", "{root}/deep.yaml"], 2, r"(nested more than 100 levels|nesting depth)"),
    "2 MB config": (["validate", "{root}/large.yaml"], 2, r"larger than the 1000000 bytes"),
    "seeds: range(1, 1000000000)": (
        ["run", "{root}/seeds.yaml", "--out", "{root}/results"],
        2,
        r"999999999 values, more than the 10000 a grid axis may have",
    ),
    "three linspace axes of 1000": (
        ["run", "{root}/linspace.yaml", "--out", "{root}/results", "--dry-run"],
        2,
        r"the grid has 1000000000 runs .* more than the limit of 10000; raise it with --max-runs",
    ),
    "12 runs over --max-runs 5": (["validate", "{root}/twelve.yaml", "--max-runs", "5"], 2, r"12 runs .* limit of 5"),
    "12 runs within --max-runs 12": (["validate", "{root}/twelve.yaml", "--max-runs", "12"], 0, None),
    "--max-runs 0": (["validate", "{root}/twelve.yaml", "--max-runs", "0"], 2, r"--max-runs 0"),
    "markup in grid values (dry run)": (
        ["run", "{root}/markup.yaml", "--out", "{root}/results", "--dry-run"],
        0,
        None,
    ),
    "markup in grid values (validate)": (["validate", "{root}/markup.yaml"], 0, None),
    "--workers 0": (["run", "{root}/tiny.yaml", "--out", "{root}/results", "--workers", "0"], 2, r"--workers 0"),
    "--workers -3": (["run", "{root}/tiny.yaml", "--out", "{root}/results", "--workers", "-3"], 2, r"--workers -3"),
    "--stack 0": (["run", "{root}/tiny.yaml", "--out", "{root}/results", "--stack", "0"], 2, r"--stack 0"),
    "CNN on the parabola": (["validate", "{root}/cnn.yaml"], 2, r"model cnn needs images, but data quadratic"),
    "CNN on the parabola, as a grid value": (
        ["validate", "{root}/tiny.yaml", "--set", "grid.model.name=[mlp, cnn]"],
        2,
        r"model cnn needs images",
    ),
    "!!python/object tag": (["validate", "{root}/python_tag.yaml"], 2, r"YAML tag .* not allowed at line 2"),
    "lr: 1e400": (["validate", "{root}/huge_lr.yaml"], 2, r"train\.lr: Input should be a finite number"),
    "seeds: [1e30]": (["validate", "{root}/huge_seed.yaml"], 2, r"seeds\.0: Input should be a valid integer"),
    "batch_size: 10**100": (["validate", "{root}/huge_int.yaml"], 2, r"larger than any setting can use"),
    "unicode experiment name": (["validate", "{root}/unicode_name.yaml"], 2, r"name: String should match pattern"),
    "unicode values": (["validate", "{root}/unicode_values.yaml"], 0, None),
    "name ..": (["run", "{root}/dotdot_name.yaml", "--out", "{root}/results"], 2, r"name: String should match"),
    "name with path separators": (
        ["run", "{root}/slash_name.yaml", "--out", "{root}/results"],
        2,
        r"name: String should match",
    ),
    "symlink loop as data.path": (["validate", "{root}/loop.yaml"], 2, r"no such folder \(Too many levels"),
    "a file as data.path": (["validate", "{root}/file_path.yaml"], 2, r"is a file, not a folder"),
    "unwritable --out": (
        ["run", "{root}/tiny.yaml", "--out", "/sys/normbench-results"],
        2,
        r"--out /sys/normbench-results: cannot write the results there",
    ),
    "empty YAML file": (["validate", "{root}/empty.yaml"], 2, r"the file is empty"),
    "a list at the top level": (["validate", "{root}/list.yaml"], 2, r"expected a mapping .* got list"),
    "non-UTF-8 bytes": (["validate", "{root}/latin1.yaml"], 2, r"not UTF-8 text \(byte 0xe9"),
    "a 10000-character key": (["validate", "{root}/long_key.yaml"], 2, r"x…: unknown key"),
    "a 10000-character value": (["validate", "{root}/long_value.yaml"], 2, r"unknown norm 'y+…"),
    "a sent results folder whose config.yaml is a bomb (summary)": (
        ["summary", "{root}/sent/tiny"],
        2,
        r"config\.yaml is damaged: it cannot be read \(YAMLLimit: .*alias bomb",
    ),
    "a sent results folder whose config.yaml is a bomb (plot)": (
        ["plot", "{root}/sent/tiny"],
        2,
        r"config\.yaml is damaged: it cannot be read \(YAMLLimit",
    ),
}


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def normbench(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "normbench", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        preexec_fn=_limit,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize("case", list(TABLE))
def test_hostile_input(place, case):
    argv, code, pattern = TABLE[case]
    args = [a.replace("{root}", str(place)) for a in argv]
    before = snapshot(place / "results")
    done = normbench(args, place)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, (case, output[-2000:])
    assert done.returncode == code, (case, output[-2000:])
    if pattern is not None:
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1, (case, output[-2000:])
        assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), (case, lines[0])
        assert len(lines[0]) < 600, (case, len(lines[0]))  # a value is quoted, never expanded
    assert not (place / "PWNED").exists(), case
    assert snapshot(place / "results") == before, case


def test_markup_and_dollars_print_as_written(place):
    """Grid values with rich markup and $: the dry run's table shows them literally, as does validate."""
    done = normbench(["run", str(place / "markup.yaml"), "--out", str(place / "results"), "--dry-run"], place)
    assert done.returncode == 0, done.stderr
    for value in ("a[/]b", "[old]", "a$b$"):
        assert value in done.stdout, done.stdout


def test_a_read_only_results_folder_is_one_line(place, tmp_path):
    """--out inside a folder of mode 0o555: root ignores the mode, so this runs only for other users (the row
    `unwritable --out` above covers root, on a read-only file system)."""
    if os.geteuid() == 0:
        pytest.skip("root writes into a folder of mode 0o555; the /sys row covers a read-only file system")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        done = normbench(["run", str(place / "tiny.yaml"), "--out", str(ro / "results")], place)
    finally:
        ro.chmod(0o755)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "cannot write" in lines[0], lines


def test_a_cifar_batch_of_numpy_arrays_still_loads(tmp_path):
    """The restricted unpickler reads what real CIFAR-10 batches hold: a dict of bytes keys, a uint8 array, a list."""
    from normbench.config import DataConfig
    from normbench.data import build_dataset

    rng = np.random.RandomState(0)
    for name in ("data_batch_1", "test_batch"):
        batch = {b"batch_label": b"x", b"data": rng.randint(0, 256, (3, 3072)).astype(np.uint8), b"labels": [1, 2, 3]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    d = build_dataset(DataConfig(name="cifar10", path=str(tmp_path)))
    assert d.x_train.shape == (3, 3, 32, 32)


def test_markup_in_values_prints_as_written_in_the_run_log_and_summary(place, tmp_path):
    """Train the three runs whose data.path (unused by the parabola) holds markup and dollars: the run log (stderr)
    and summary's table (stdout) show each value as written; a figure label escapes $ so it is not mathtext."""
    from normbench.views.style import value_label

    runner = CliRunner()
    out = tmp_path / "results"
    done = runner.invoke(app, ["run", str(place / "markup.yaml"), "--out", str(out)])
    assert done.exit_code == 0, done.output
    table = runner.invoke(app, ["summary", str(out / "m")])
    assert table.exit_code == 0, table.output
    for value in ("a[/]b", "[old]", "a$b$"):
        assert f"path={value} seed" in done.output or f"path={value}:" in done.output, done.output
        assert value in table.output, table.output
    assert value_label("data.path", "a$b$") == r"path=a\$b\$"
