"""Shared fixtures: a tiny experiment config that trains in well under a second per run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "tiny",
    "seeds": [1, 2],
    "data": {"name": "quadratic", "n": 64, "n_test": 32, "noise": 1.0},
    "model": {"depth": 3, "width": 8, "weight_init": {"name": "normal", "std": 0.5}, "bias_init": 0.1},
    "train": {"optimizer": "sgd", "lr": 0.001, "steps": 12},
    "record": {"loss_every": 3, "hist_every": 6, "bins": 10},
    "grid": {"model.norm": ["none", "batch"], "model.activation": ["relu", "tanh"]},
}


@pytest.fixture
def tiny_raw() -> dict:
    return yaml.safe_load(yaml.safe_dump(TINY))  # a deep copy each time


@pytest.fixture
def write_config(tmp_path: Path):
    def write(raw: dict | str, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
        return path

    return write


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` -> the SHA-256 of its bytes: what a command must leave as it was."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def finished_sweep(root: Path, raw: dict | None = None) -> tuple[Path, Path]:
    """A finished tiny sweep (TINY with one seed, or `raw`) trained into root/results; (config file, results)."""
    from typer.testing import CliRunner

    from normbench.cli import app

    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(raw or {**TINY, "seeds": [1]}))
    out = root / "results"
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return cfg, out
