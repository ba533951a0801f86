"""End to end through the command line: run, summary, plot, list, on a tiny experiment."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from normbench.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_run_summary_plot(tmp_path, write_config, tiny_raw):
    out = tmp_path / "results"
    cfg = str(write_config(tiny_raw))
    invoke("run", cfg, "--out", str(out))
    again = invoke("run", cfg, "--out", str(out))
    assert "8 already finished" in again.output

    records = json.loads(invoke("summary", str(out), "--format", "json").stdout)
    assert len(records) == 8
    r = records[0]
    for key in (
        "run_id",
        "status",
        "diverged_step",
        "final_train_loss",
        "model.norm",
        "model.activation",
        "seed",
    ):
        assert key in r
    assert len(r["dead_fraction"]) == len(r["saturated_fraction"]) == 3
    assert "run_id" in invoke("summary", str(out / "tiny"), "--format", "csv").stdout
    assert "tiny" in invoke("summary", str(out)).stdout

    invoke("plot", str(out))
    figures = sorted(p.name for p in (out / "tiny" / "figures").iterdir())
    assert "cost.png" in figures
    assert "units_activation-relu.png" in figures and "units_activation-tanh.png" in figures
    assert "hist_post_act_activation-relu_step00006.png" in figures
    for name in figures:
        assert (out / "tiny" / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    invoke("plot", str(out / "tiny"), "--format", "svg", "--point", "pre_norm", "--compare", "model.activation")
    assert any(p.suffix == ".svg" for p in (out / "tiny" / "figures").iterdir())


def test_plot_and_summary_errors(tmp_path):
    for args in (["plot", str(tmp_path / "none")], ["summary", str(tmp_path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.output.startswith("error: ")


def test_bad_compare_key(tmp_path, write_config, tiny_raw):
    tiny_raw |= {"seeds": [1], "grid": {"model.norm": ["none", "batch"]}}
    invoke("run", str(write_config(tiny_raw)), "--out", str(tmp_path))
    result = runner.invoke(app, ["plot", str(tmp_path), "--compare", "model.depth"])
    assert result.exit_code == 2 and "grid keys: model.norm" in result.output


def test_list_shows_registries_and_configs():
    out = invoke("list").stdout
    for name in (
        "norms",
        "batch",
        "activations",
        "tanh",
        "optimizers",
        "adam",
        "quadratic",
        "mlp",
        "morvan_tf23",
    ):
        assert name in out


def test_failed_runs_make_run_exit_1_and_plot_refuses_empty(tmp_path, write_config, tiny_raw, monkeypatch):
    from normbench import sweep

    def broken(cfgs, *args, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(sweep, "train_stack", broken)
    tiny_raw |= {"seeds": [1], "grid": {"model.norm": ["none", "batch"]}}
    result = runner.invoke(app, ["run", str(write_config(tiny_raw)), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "2 failed" in result.output
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and "no finished runs" in result.output
