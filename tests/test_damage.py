"""Damage and faults, one table: each row damages a copy of a finished results folder (or makes a write fail) and
runs one command, which must end in the exit code of the row with its fault said in one line (no traceback), and
leave every file as it was except those the row's repair is documented to change.

Disk full is real (a 3 MB tmpfs) and a read-only folder is a real read-only bind mount; both need root and are
skipped without it. Ctrl-C is a real SIGINT to the process group of a `normbench run` with worker processes, and a
lost Dask scheduler a real `dask scheduler` process killed mid-sweep."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from normbench.cli import app
from tests.conftest import TINY, finished_sweep, snapshot

runner = CliRunner()
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny sweep (4 runs), made once; each test gets a copy."""
    return finished_sweep(tmp_path_factory.mktemp("damage"))


@pytest.fixture
def results(finished, tmp_path) -> tuple[Path, Path]:
    cfg, out = finished
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    return cfg, copy


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def one_run(exp: Path) -> Path:
    return sorted(p for p in (exp / "runs").iterdir() if not p.name.startswith("."))[0]


def set_summary_key(key: str, value) -> Callable[[Path], None]:
    def damage(exp: Path) -> None:
        path = one_run(exp) / "summary.json"
        s = json.loads(path.read_text())
        s[key] = value
        path.write_text(json.dumps(s))

    return damage


def write(rel: str, text: str) -> Callable[[Path], None]:
    """Replace a file (rel: 'RUN/...' for the first run's folder) with `text`."""

    def damage(exp: Path) -> None:
        path = one_run(exp) / rel.removeprefix("RUN/") if rel.startswith("RUN/") else exp / rel
        path.write_text(text)

    return damage


def folder_instead(exp: Path) -> None:
    path = one_run(exp) / "summary.json"
    path.unlink()
    path.mkdir()


def truncate(rel: str) -> Callable[[Path], None]:
    def damage(exp: Path) -> None:
        path = one_run(exp) / rel.removeprefix("RUN/") if rel.startswith("RUN/") else exp / rel
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return damage


def remove(rel: str) -> Callable[[Path], None]:
    def damage(exp: Path) -> None:
        path = one_run(exp) / rel.removeprefix("RUN/") if rel.startswith("RUN/") else exp / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return damage


EDITED = 123456.789


def edit_runs_table(exp: Path) -> None:
    """A value of runs.parquet edited, as a user or a tool might: the file stays valid."""
    from normbench.store import format_metadata, write_parquet_atomic

    runs = pd.read_parquet(exp / "runs.parquet")
    runs.loc[0, "final_train_loss"] = EDITED
    write_parquet_atomic(runs, exp / "runs.parquet", format_metadata())


def stale_temps(exp: Path) -> None:
    """What a process killed while writing leaves: temporary files and a run folder named with its (dead) pid."""
    pid = dead_pid()
    (exp / f".runs.parquet.tmp-{pid}").write_bytes(b"PAR1 half a table")
    (exp / f".config.yaml.tmp-{pid}").write_text("half")
    tmp_run = exp / "runs" / f".tmp-{one_run(exp).name}-{pid}"
    tmp_run.mkdir()
    (tmp_run / "curves.parquet").write_bytes(b"PAR1")
    (exp.parent / f".report.html.tmp-{pid}").write_text("<html>")


RUN0 = "RUN0"  # stands for the damaged run's folder in the expected text and the files allowed to change

# name: (damage, command (EXP: the experiment folder, CFG: its config), exit code, text the output must contain,
#        files (relative to the results folder) the command may change, add or remove; RUN0 and prefixes allowed)
ROWS: dict[str, tuple] = {
    # -- a run's summary.json that is not what this format writes: `check` names it, `run` trains the run again
    "summary.json {}": (
        write("RUN/summary.json", "{}"),
        "check EXP",
        1,
        "RUN0 (damaged): summary.json has no status",
        {"tiny/runs.parquet"},
    ),
    "summary.json []": (
        write("RUN/summary.json", "[]"),
        "check EXP",
        1,
        "summary.json holds a list, not an object",
        {"tiny/runs.parquet"},
    ),
    'summary.json "x"': (
        write("RUN/summary.json", '"x"'),
        "check EXP",
        1,
        "summary.json holds text, not an object",
        {"tiny/runs.parquet"},
    ),
    "summary.json not JSON": (
        write("RUN/summary.json", "{"),
        "check EXP",
        1,
        "summary.json is not valid JSON",
        {"tiny/runs.parquet"},
    ),
    "summary.json of a wrong type": (
        set_summary_key("steps_done", "twelve"),
        "check EXP",
        1,
        "summary.json's 'steps_done' is text, not an integer",
        {"tiny/runs.parquet"},
    ),
    "summary.json naming another run": (
        set_summary_key("run_id", "abc"),
        "check EXP",
        1,
        "summary.json names run 'abc'",
        {"tiny/runs.parquet"},
    ),
    "summary.json a folder": (
        folder_instead,
        "check EXP",
        1,
        "summary.json is a folder, not a file",
        {"tiny/runs.parquet"},
    ),
    "run folder without summary.json": (
        remove("RUN/summary.json"),
        "check EXP",
        1,
        "RUN0 (damaged): summary.json missing",
        {"tiny/runs.parquet"},
    ),
    "run folder without a table": (
        remove("RUN/curves.parquet"),
        "check EXP",
        1,
        "RUN0 (ok): curves.parquet missing",
        set(),
    ),
    "truncated table": (
        truncate("RUN/layers.parquet"),
        "check EXP",
        1,
        "layers.parquet changed or damaged since it was written",
        set(),
    ),
    "summary.json {}: summary": (
        write("RUN/summary.json", "{}"),
        "summary EXP",
        0,
        "RUN0: summary.json has no status; shown as not finished: `normbench check",
        {"tiny/runs.parquet"},
    ),
    "summary.json {}: run": (
        write("RUN/summary.json", "{}"),
        "run CFG --out OUT",
        0,
        "1 damaged run folder moved aside to",
        {"RUN0", "tiny/runs/.damaged-", "tiny/runs.parquet"},
    ),
    "truncated table: run": (
        truncate("RUN/layers.parquet"),
        "run CFG --out OUT",
        0,
        "1 damaged run folder moved aside to",
        {"RUN0", "tiny/runs/.damaged-", "tiny/runs.parquet"},
    ),
    "truncated table: plot": (
        truncate("RUN/layers.parquet"),
        "plot EXP",
        2,
        "layers.parquet cannot be read",
        {"tiny/figures"},
    ),
    "truncated table: export": (
        truncate("RUN/layers.parquet"),
        "export --tensorboard EXP --out OUT/tb",
        2,
        "layers.parquet cannot be read",
        set(),
    ),
    # -- runs.parquet is derived: verified against the run folders, rebuilt (to the bytes it had) when it differs
    "edited runs.parquet: check": (
        edit_runs_table,
        "check EXP",
        1,
        "runs.parquet disagreed with the run folders' summary.json (edited or damaged); rebuilt from them",
        {"tiny/runs.parquet"},
    ),
    "edited runs.parquet: summary": (
        edit_runs_table,
        "summary EXP --format csv",
        0,
        "rebuilt from them",
        {"tiny/runs.parquet"},
    ),
    "truncated runs.parquet: check": (truncate("runs.parquet"), "check EXP", 1, "runs.parquet cannot be read", set()),
    "truncated runs.parquet: summary": (
        truncate("runs.parquet"),
        "summary EXP",
        2,
        "runs.parquet cannot be read",
        set(),
    ),
    "truncated runs.parquet: report": (truncate("runs.parquet"), "report EXP", 2, "runs.parquet cannot be read", set()),
    # -- the experiment's config.yaml
    "config.yaml not YAML: check": (
        write("config.yaml", "grid: [\n"),
        "check EXP",
        1,
        "config.yaml is damaged: it is not valid YAML",
        set(),
    ),
    "config.yaml not YAML: summary": (
        write("config.yaml", "grid: [\n"),
        "summary EXP",
        2,
        "config.yaml is damaged: it is not valid YAML",
        set(),
    ),
    "config.yaml not YAML: plot": (write("config.yaml", "grid: [\n"), "plot EXP", 2, "config.yaml is damaged", set()),
    "config.yaml not YAML: report": (
        write("config.yaml", "grid: [\n"),
        "report EXP",
        2,
        "config.yaml is damaged",
        set(),
    ),
    "config.yaml not YAML: export": (
        write("config.yaml", "grid: [\n"),
        "export --tensorboard EXP --out OUT/tb",
        2,
        "config.yaml is damaged",
        set(),
    ),
    "config.yaml a list: summary": (
        write("config.yaml", "[1, 2]\n"),
        "summary EXP --by norm",
        2,
        "config.yaml is damaged: it is not an experiment config",
        set(),
    ),
    "config.yaml missing: plot": (remove("config.yaml"), "plot EXP", 2, "config.yaml is damaged: it is missing", set()),
    # -- folders that are not results
    "no runs/ folder: check": (
        remove("runs"),
        "check EXP",
        1,
        "no run folders (runs/ is empty or missing)",
        {"tiny/runs.parquet"},
    ),
    "check of an empty folder": (lambda exp: None, "check OUT/empty", 2, "no experiment results under", set()),
    "check of a file": (lambda exp: None, "check CFG", 2, "is a file, not a results folder", set()),
    # -- what a killed process left: removed by the next command, nothing else changed
    "stale temporaries of a dead process": (
        stale_temps,
        "run CFG --out OUT",
        0,
        "4 already finished",
        {".report.html.tmp-", "tiny/.runs.parquet.tmp-", "tiny/.config.yaml.tmp-", "tiny/runs/.tmp-"},
    ),
    "stale report temporary": (
        stale_temps,
        "report OUT",
        0,
        "report ->",
        {".report.html.tmp-", "report.html", "tiny/figures", "tiny/.", "tiny/runs/.tmp-"},
    ),
}


def _allowed(rel: str, allowed: set[str], run0: str) -> bool:
    return any(rel.startswith(a.replace("RUN0", run0)) for a in allowed)


def _command(template: str, cfg: Path, out: Path) -> list[str]:
    (out / "empty").mkdir(exist_ok=True)
    words = template.replace("EXP", str(out / "tiny")).replace("CFG", str(cfg)).replace("OUT", str(out))
    return words.split()


@pytest.mark.parametrize("row", ROWS, ids=list(ROWS))
def test_damage_is_named_in_one_line(results, row):
    damage, template, code, text, allowed = ROWS[row]
    cfg, out = results
    exp = out / "tiny"
    run0 = str(one_run(exp).relative_to(out))
    (out / "empty").mkdir()
    damage(exp)
    before = snapshot(out)
    result = runner.invoke(app, _command(template, cfg, out))
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output and not isinstance(result.exception, Exception | KeyboardInterrupt), output
    assert text.replace("RUN0", str(out / run0)) in " ".join(output.split()), output  # rich wraps at 80 columns
    if code == 2:
        assert len([line for line in output.splitlines() if line.startswith("error:")]) == 1, output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    after = snapshot(out)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert {k for k in changed if not _allowed(k, allowed, run0)} == set(), output
    if "stale" in row:  # what a killed process left is removed by the next command
        assert [k for k in after if ".tmp-" in k] == [], after


def test_an_edited_runs_table_is_never_shown_and_is_rebuilt_to_its_bytes(finished, results):
    """The edited value is not printed; the rebuilt runs.parquet is byte for byte the one the sweep wrote."""
    _, original = finished
    _, out = results
    edit_runs_table(out / "tiny")
    result = runner.invoke(app, ["summary", str(out / "tiny"), "--format", "json"])
    assert result.exit_code == 0 and str(EDITED)[:6] not in result.stdout, result.output
    assert (out / "tiny/runs.parquet").read_bytes() == (original / "tiny/runs.parquet").read_bytes()


def test_a_damaged_run_is_moved_aside_and_trained_again(results):
    cfg, out = results
    exp = out / "tiny"
    run = one_run(exp)
    (run / "notes.txt").write_text("mine")  # a user's file in the run folder is moved with it, never deleted
    (run / "summary.json").write_text("{}")
    result = runner.invoke(app, ["run", str(cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "1 to train" in said and "1 of them finished but with damaged files" in said, result.output
    (aside,) = (exp / "runs").glob(f".damaged-{run.name}-*")
    assert (aside / "notes.txt").read_text() == "mine" and (aside / "summary.json").read_text() == "{}"
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
    assert runner.invoke(app, ["check", str(exp)]).exit_code == 0


# -- real write failures: a full disk (tmpfs), a read-only folder (bind mount) ------------------------------------


@contextmanager
def mounted(args: list[str], target: Path) -> Iterator[None]:
    if not ROOT:
        pytest.skip("mounting a tmpfs or a read-only bind mount needs root")
    if subprocess.run(["mount", *args, str(target)], capture_output=True).returncode != 0:
        pytest.skip(f"cannot mount {args} here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True)


@contextmanager
def full_disk(finished, tmp_path: Path, free_kb: int) -> Iterator[Path]:
    """A copy of the finished results on a 3 MB tmpfs with about `free_kb` KB left."""
    _, original = finished
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted(["-t", "tmpfs", "-o", "size=3m", "tmpfs"], disk):
        shutil.copytree(original, disk / "results")
        st = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - free_kb * 1024))
        yield disk / "results"


DISK_FULL = {
    "plot": (["plot", "EXP"], "tiny/figures", 150),
    "report": (["report", "OUT"], "tiny/figures", 150),
    "export": (["export", "--tensorboard", "OUT", "--out", "DISK/tb"], "-", 20),
}


@pytest.mark.parametrize("command", DISK_FULL)
def test_disk_full_is_one_line_and_leaves_no_partial_file(finished, tmp_path, command):
    from PIL import Image

    args, allowed, free_kb = DISK_FULL[command]
    with full_disk(finished, tmp_path, free_kb) as out:
        before = snapshot(out)
        words = [
            a.replace("EXP", str(out / "tiny")).replace("OUT", str(out)).replace("DISK", str(out.parent)) for a in args
        ]
        result = runner.invoke(app, words)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: disk full writing "), result.output
        assert "Traceback" not in result.output
        after = snapshot(out)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert {k for k in changed if not k.startswith(allowed)} == set()
        assert not (out / "report.html").exists()
        leftovers = [p for p in out.parent.rglob("*") if ".tmp-" in p.name]
        assert leftovers == []
        for png in (out / "tiny/figures").glob("*.png"):  # each figure there is whole: a reader may embed it
            with Image.open(png) as im:
                im.verify()
        assert not (out.parent / "tb" / "tiny").exists() or command != "export"


def test_disk_full_writing_the_report_page_leaves_no_page(finished, tmp_path):
    """The figures fit, the page does not: one line naming report.html, no page and no temporary left."""
    with full_disk(finished, tmp_path, free_kb=1500) as out:
        assert runner.invoke(app, ["plot", str(out / "tiny")]).exit_code == 0
        st = os.statvfs(out)
        (out.parent / "filler2").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 100 * 1024))
        before = snapshot(out)
        result = runner.invoke(app, ["report", str(out)])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert lines == [f"error: disk full writing {out / 'report.html'}; nothing partial was left there"], lines
        assert snapshot(out) == before and [p for p in out.rglob("*") if ".tmp-" in p.name] == []


def test_a_read_only_results_folder_is_one_line_and_unchanged(finished, tmp_path):
    _, original = finished
    out = tmp_path / "results"
    shutil.copytree(original, out)
    edit_runs_table(out / "tiny")
    before = snapshot(out)
    with _read_only(out):
        plot = runner.invoke(app, ["plot", str(out / "tiny")])
        check = runner.invoke(app, ["check", str(out / "tiny")])
    assert plot.exit_code == 2 and len(plot.stderr.strip().splitlines()) == 1, plot.output
    assert "cannot be rebuilt (Read-only file system)" in plot.stderr, plot.output
    assert check.exit_code == 1 and "cannot be rebuilt" in check.output and "Traceback" not in check.output
    assert snapshot(out) == before


@contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """`folder` made read-only by a read-only bind mount of itself (root ignores file permissions)."""
    if not ROOT:
        pytest.skip("a read-only bind mount needs root")
    if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# -- Ctrl-C and a lost Dask scheduler: real signals to real processes -----------------------------------------------


def _long_config(tmp_path: Path, long_steps: int) -> Path:
    """32 seeds of a fast setting (finished within seconds) and 32 of a slow one whose stacks take minutes."""
    raw = {
        **TINY,
        "name": "long",
        "seeds": list(range(1, 33)),
        "record": {"loss_every": 50, "hist_every": 1000, "bins": 10},
        "grid": {
            "zip": [{"model.norm": "none", "train.steps": 40}, {"model.norm": "batch", "train.steps": long_steps}]
        },
    }
    raw["model"] = {**raw["model"], "width": 32}
    cfg = tmp_path / "long.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def _wait_for_runs(runs_dir: Path, n: int, proc: subprocess.Popen, limit: float = 240.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if runs_dir.is_dir() and len([p for p in runs_dir.iterdir() if not p.name.startswith(".")]) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    pytest.fail(f"fewer than {n} runs committed in {limit} s")


def _wait_until_training(proc: subprocess.Popen, count: int, limit: float = 120.0) -> None:
    """Until `count` of the sweep's worker processes are each computing (a second of CPU time more than when first
    seen): they are training, not starting or waiting for a stack."""
    from tests.test_workers import children

    def cpu_s(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    first: dict[int, float] = {}
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        workers = [p for p in children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        for pid in workers:
            first.setdefault(pid, cpu_s(pid))
        if sum(cpu_s(pid) - first[pid] >= 1.0 for pid in workers) >= count:
            return
        time.sleep(0.2)
    pytest.fail(f"fewer than {count} worker processes training after {limit} s")


def test_ctrl_c_stops_a_sweep_of_long_stacks_at_once(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while 2 worker processes train stacks
    that take minutes: the sweep exits 130 with one line saying what was saved and how to resume, no worker prints
    a traceback, and no temporary file is left."""
    cfg = _long_config(tmp_path, long_steps=200_000)
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "normbench", "run", str(cfg), "--out", str(out), "--workers", "2", "--no-compile"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As a terminal starts it: Ctrl-C's SIGINT handled, whatever this test's own process inherited (a shell
        # starts a background job with SIGINT ignored, and an ignored signal stays ignored across exec).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_for_runs(out / "long" / "runs", 32, proc)  # the fast runs are committed
        _wait_until_training(proc, 2)  # the slow stacks are training
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:  # a sweep that did not stop must not outlive the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Stopping needs no training to finish: the parent's KeyboardInterrupt terminates the workers and exits. 20 s
    # is generous for two shared cores under load (a second or two is typical) and far below the minutes the slow
    # stacks would take to finish (a sweep that waited for its workers would fail here).
    assert proc.returncode == 130 and took < 20, (took, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"interrupted: 32 runs of this sweep were saved \(32 of 64 finished in .*\); running the "
        r"same command again resumes with the 32 others",
        last,
    ), err
    exp = out / "long"
    assert [p for p in exp.rglob("*") if ".tmp-" in p.name or p.name.startswith(".claim-")] == []
    check = runner.invoke(app, ["check", str(exp)])
    assert check.exit_code == 0 and "32 run folders" in check.output and "0 damaged" in check.output, check.output


def test_a_lost_dask_scheduler_is_one_line_and_keeps_the_finished_runs(tmp_path):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    scheduler = subprocess.Popen(
        [bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [bin_dir / "dask", "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cfg = _long_config(tmp_path, long_steps=200_000)
        out = tmp_path / "results"
        from distributed import Client

        with Client(address, timeout="120s") as client:  # the scheduler answers and a worker is registered
            client.wait_for_workers(1, timeout=120)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "normbench",
                "run",
                str(cfg),
                "--out",
                str(out),
                "--executor",
                "dask",
                "--scheduler",
                address,
                "--no-compile",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_runs(out / "long" / "runs", 16, proc)
        scheduler.kill()
        _, err = proc.communicate(timeout=120)
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait()
    assert proc.returncode == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:") or "ERROR" in line]
    assert len(errors) == 1 and errors[0].startswith("error: lost the Dask scheduler"), err
    assert "the finished ones are kept: run the same command again" in errors[0]
    committed = [p for p in (out / "long" / "runs").iterdir() if not p.name.startswith(".")]
    assert len(committed) >= 16
    assert runner.invoke(app, ["check", str(out / "long")]).exit_code == 0
