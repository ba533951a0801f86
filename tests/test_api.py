"""normbench from Python: the functions of normbench/api.py do what the commands do, on the same folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import normbench
from normbench.cli import app
from normbench.config import ConfigError

runner = CliRunner()


def test_importing_normbench_imports_no_torch_and_names_its_functions():
    code = "import sys, normbench; normbench.open_results; normbench.run; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        normbench.nothing  # noqa: B018
    # A submodule, once imported, is an attribute of the package: none may share a name with a function.
    package = Path(normbench.__file__).parent
    assert not [name for name in normbench.__all__ if (package / f"{name}.py").exists() or (package / name).is_dir()]


def test_run_from_a_dict_equals_the_command_on_the_same_config(tmp_path, tiny_raw, write_config):
    runs = normbench.run(tiny_raw, ["seeds=[1]"], out=tmp_path / "api", quiet=True)
    cli = runner.invoke(app, ["run", str(write_config(tiny_raw)), "--set", "seeds=[1]", "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    by_cli = pd.read_parquet(tmp_path / "cli" / "tiny" / "runs.parquet")
    assert len(runs) == 4 and sorted(runs.run_id) == sorted(by_cli.run_id)
    a, b = runs.set_index("run_id").sort_index(), by_cli.set_index("run_id").sort_index()
    assert (a.final_train_loss == b.final_train_loss).all()  # one driver: the same numbers, bit for bit
    assert tiny_raw["seeds"] == [1, 2]  # the caller's dict is left as it was


def test_results_tables_selection_and_figures(tmp_path, tiny_raw):
    normbench.run(tiny_raw, out=tmp_path, quiet=True)
    res = normbench.open_results(tmp_path)  # the results folder holds one experiment: that one
    assert res.name == "tiny" and len(res.runs) == 8
    assert set(res.axes) >= {"model.norm", "model.activation", "seed"}
    curves = res.curves()
    assert set(curves.run_id) == set(res.runs.run_id) and "loss" in curves.columns
    batch = res.layers(where=["norm=batch"])
    assert set(batch["model.norm"]) == {"batch"} and len(set(batch.run_id)) == 4
    assert set(res.histograms(where=["activation=tanh", "seed=2"]).run_id) == set(
        res.select(["activation=tanh", "seed=2"]).run_id
    )
    with pytest.raises(ConfigError, match="no table 'weights'"):
        res.table("weights")

    paths = normbench.draw(tmp_path / "tiny", where=["norm=batch"])
    assert paths and all(p.is_file() and p.parent.name == "where-norm=batch" for p in paths)


def test_open_results_of_a_folder_of_several_experiments_names_them(tmp_path, tiny_raw):
    for name in ("one", "two"):
        normbench.run(tiny_raw | {"name": name}, ["seeds=[1]", "grid.model.activation=null"], out=tmp_path, quiet=True)
    with pytest.raises(ConfigError, match=r"holds 2 experiments \(one, two\)"):
        normbench.open_results(tmp_path)
    assert normbench.open_results(tmp_path / "two").name == "two"


@pytest.mark.parametrize("how", ["script", "stdin"])
def test_run_with_worker_processes_from_a_script_without_a_main_guard_or_from_stdin(tmp_path, tiny_raw, how):
    """Spawned workers run normbench's functions only: the caller's script does not run again in each of them
    (it would train again, or fail to bootstrap), and `python -` works although it has no file."""
    code = (
        "import normbench\n"
        f"runs = normbench.run({tiny_raw!r}, out={str(tmp_path / 'out')!r}, workers=2, stack=1, quiet=True)\n"
        "print('trained', len(runs), sorted(set(runs.status)))\n"
    )
    if how == "script":
        script = tmp_path / "train.py"
        script.write_text(code)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    else:
        proc = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["trained 8 ['ok']"], proc.stdout + proc.stderr


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """README's notebook example, as written, but for its last line (normbench claims' quick check of a claim takes
    a minute: the claims tests check that command)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    assert lines[-1].startswith("rows = normbench.check_claims(")
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec("\n".join(lines[:-1]), names)
    assert len(names["runs"]) == 8 and set(names["res"].runs.run_id) == set(names["runs"].run_id)
    assert set(names["layers"]["model.norm"]) == {"batch"} and not names["curves"].empty
    assert list((tmp_path / "results" / "morvan_tf23" / "figures").glob("*.png"))
