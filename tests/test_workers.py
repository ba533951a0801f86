"""Worker processes that die, and a sweep that dies under its workers, with real processes and SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_sweep(tmp_path, write_config, tiny_raw, steps: int) -> tuple[subprocess.Popen, list[str], Path]:
    tiny_raw["seeds"] = [1, 2, 3]
    tiny_raw["train"]["steps"] = steps
    cfg = write_config(tiny_raw)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "normbench", "run", str(cfg), "--out", str(out), "--workers", "2", "--stack", "1"]
    with open(tmp_path / "stderr.txt", "w") as log:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log), cmd, out


def wait_for_workers(proc: subprocess.Popen, count: int, out: Path) -> list[int]:
    """The sweep's worker processes (the resource tracker is not one), once `count` of them are up and a first run
    is committed: the pool is training, whatever the machine's load."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before its workers were seen training"
        workers = [p for p in children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        if len(workers) >= count and list(out.glob("tiny/runs/*/summary.json")):
            return workers
        time.sleep(0.1)
    raise AssertionError("the workers did not start training")


def test_a_killed_worker_is_replaced_and_its_runs_trained_again(tmp_path, write_config, tiny_raw):
    proc, _, out = start_sweep(tmp_path, write_config, tiny_raw, steps=600)
    workers = wait_for_workers(proc, 2, out)
    os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
    proc.wait(timeout=600)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
    table = pd.read_parquet(out / "tiny" / "runs.parquet")
    assert len(table) == 12 and set(table.status) == {"ok"}, table.status.value_counts()


def test_workers_end_when_the_sweep_is_killed(tmp_path, write_config, tiny_raw):
    proc, _, out = start_sweep(tmp_path, write_config, tiny_raw, steps=3000)
    workers = wait_for_workers(proc, 2, out)
    tracker = [p for p in children(proc.pid) if p not in workers]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in workers + tracker):
        time.sleep(0.2)
    assert not [p for p in workers + tracker if alive(p)], "processes outlived the sweep"


def test_two_sweeps_on_one_folder_never_train_the_same_run(tmp_path, write_config, tiny_raw):
    """Two real `normbench run` of one config into one folder at once: each run is trained by one of them only
    (a claim per run), and both end with the whole grid finished in runs.parquet."""
    tiny_raw["seeds"] = [1, 2, 3, 4]
    tiny_raw["train"]["steps"] = 1500  # seconds of training: the second starts while the first trains
    cfg = write_config(tiny_raw)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "normbench", "run", str(cfg), "--out", str(out), "--stack", "1", "--workers", "1"]
    logs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    procs = []
    for log in logs:
        with open(log, "w") as f:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f))
        # The second starts once the first holds its claims (it keeps them until its sweep ends), whatever the load.
        deadline = time.monotonic() + 120
        while len(procs) == 1 and not list((out / "tiny" / "runs").glob(".claim-*")):
            assert time.monotonic() < deadline and procs[0].poll() is None, "the first sweep took no claim"
            time.sleep(0.05)
    for p in procs:
        assert p.wait(timeout=600) == 0
    committed = [line for log in logs for line in log.read_text().splitlines() if ": ok, final train loss" in line]
    assert len(committed) == 16 and len(set(committed)) == 16, committed  # every run once, by one of the two
    assert "being trained by another normbench run" in logs[1].read_text(), logs[1].read_text()
    table = pd.read_parquet(out / "tiny" / "runs.parquet")
    assert len(table) == 16 and set(table.status) == {"ok"}
    assert not list((out / "tiny" / "runs").glob(".claim-*"))
