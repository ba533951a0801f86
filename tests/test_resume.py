"""Kill a real `normbench run` with SIGKILL mid-sweep; the next run finishes only the missing runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd


def committed(runs):
    """summary.json of each committed run folder. A run is written into a hidden .tmp-* folder first and renamed
    when complete, so a kill between the two leaves a summary in a folder that is not a committed run."""
    return [p for p in runs.glob("*/summary.json") if not p.parent.name.startswith(".")]


def test_sigkill_mid_sweep_then_resume(tmp_path, write_config, tiny_raw):
    tiny_raw["seeds"] = [1, 2, 3, 4, 5]
    tiny_raw["train"]["steps"] = 150  # long enough to be killed in the middle of the sweep
    cfg = write_config(tiny_raw)
    out = tmp_path / "out"
    runs = out / "tiny" / "runs"
    cmd = [sys.executable, "-m", "normbench", "run", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if runs.is_dir() and len(committed(runs)) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = {p.parent.name: p.stat().st_mtime_ns for p in committed(runs)}
    assert 2 <= len(before) < 20, "the sweep was not killed mid-way"
    for p in committed(runs):  # every committed run is complete and readable
        assert json.loads(p.read_text())["status"] == "ok"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} already finished" in done.stderr
    table = pd.read_parquet(out / "tiny" / "runs.parquet")
    assert len(table) == 20 and set(table.status) == {"ok"}
    assert len(set(table.run_id)) == 20
    # The runs finished before the kill were not trained again, and nothing partial is left.
    assert {k: v for k, v in before.items()} == {
        p.parent.name: p.stat().st_mtime_ns for p in committed(runs) if p.parent.name in before
    }
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in runs.iterdir()) == sorted(table.run_id)
