"""Config validation: every kind of bad input is one line naming the field, exit code 2, no traceback."""

from __future__ import annotations

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import ConfigError, expand_values, experiment_from_dict, load_experiment, packaged_configs
from normbench.sweep import preflight

runner = CliRunner()


def validate(*args: str):
    return runner.invoke(app, ["validate", *args])


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def test_valid_config_prints_grid_size(write_config, tiny_raw):
    result = validate(str(write_config(tiny_raw)))
    assert result.exit_code == 0, result.output
    assert "8 runs" in result.output


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda r: r["model"].update(nrom="batch"), ["model.nrom", "unknown key", "valid keys", "norm"]),
        (lambda r: r.update(modle={}), ["modle", "unknown key"]),
        (lambda r: r["model"].update(depth="seven"), ["model.depth", "integer"]),
        (
            lambda r: r["model"].update(norm="batchh"),
            ["model.norm", "unknown norm 'batchh'", "choose from", "batch"],
        ),
        (lambda r: r["model"].update(activation="relu6"), ["model.activation", "choose from", "tanh"]),
        (lambda r: r["train"].update(lr=-0.1), ["train.lr", "greater than 0"]),
        (lambda r: r["train"].update(optimizer="lbfgs"), ["train.optimizer", "choose from", "adam"]),
        (lambda r: r["train"].update(batch_size="half"), ["train.batch_size"]),
        (lambda r: r.update(grid={}), ["grid", "empty"]),
        (lambda r: r["grid"].update({"model.norm": []}), ["grid", "model.norm", "empty list"]),
        (lambda r: r["grid"].update({"model.nrom": ["none"]}), ["grid.model.nrom", "unknown config key"]),
        (
            lambda r: r["grid"].update({"model.norm": ["none", "bogus"]}),
            ["grid point", "model.norm", "bogus"],
        ),
        (lambda r: r["record"].update(ranges={"post_act": [1, -1]}), ["record.ranges.post_act", "below"]),
        (
            lambda r: r["record"].update(eval_split="test") or r["data"].update(n_test=0),
            ["eval_split", "n_test"],
        ),
        (lambda r: r.pop("name"), ["name", "required"]),
        (lambda r: r["grid"].update({"model.norm": ["instance"]}), ["grid point", "instance norm", "cnn"]),
        (lambda r: r["grid"].update({"model.norm": ["group"]}) or r["model"].update(norm_groups=3), ["[8]"]),
        (lambda r: r["model"].update(name="cnn", kernel=4), ["kernel must be odd"]),
        (lambda r: r["train"].update(epochs=2), ["steps or train.epochs"]),
        (lambda r: r["data"].update(preprocess="whiten"), ["data.preprocess", "zca"]),
        (lambda r: r["train"].update(lr=float("inf")), ["train.lr", "finite"]),
        (lambda r: r["train"].update(lr=float("nan")), ["train.lr", "finite"]),
        (lambda r: r["train"].update(lr=True), ["train.lr", "expected a number, got true"]),
        (lambda r: r["model"].update(depth=False), ["model.depth", "expected a number, got false"]),
        (lambda r: r["data"].update(noise=float("-inf")), ["data.noise", "finite"]),
        (lambda r: r["train"].update(batch_size=1), ["grid point", "batch_size 1 with batch norm", "single sample"]),
    ],
)
def test_bad_config_is_one_line_naming_the_field(write_config, tiny_raw, edit, fragments):
    edit(tiny_raw)
    assert_user_error(validate(str(write_config(tiny_raw))), *fragments)


def test_missing_file(tmp_path):
    assert_user_error(validate(str(tmp_path / "nope.yaml")), "config file not found", "nope.yaml")


def test_yaml_syntax_error_names_the_line(write_config):
    path = write_config("name: x\nmodel:\n  depth: [1, 2\n")
    assert_user_error(validate(str(path)), "YAML syntax error", "line")


def test_not_a_mapping(write_config):
    assert_user_error(validate(str(write_config("- a\n- b\n"))), "expected a mapping")


def test_set_overrides_and_errors(write_config, tiny_raw):
    path = str(write_config(tiny_raw))
    ok = validate(path, "--set", "grid.seed=[1, 2, 3]", "--set", "seeds=null", "--set", "train.lr=0.5")
    assert ok.exit_code == 0, ok.output
    assert "12 runs" in ok.output
    assert_user_error(validate(path, "--set", "train.lr"), "--set", "KEY=VALUE")
    assert_user_error(validate(path, "--set", "train.lrr=1"), "train.lrr", "unknown key")
    assert_user_error(validate(path, "--set", "train.lr=-1"), "train.lr")


def test_grid_expansion_canonical_names_and_ids(tiny_raw):
    tiny_raw["grid"]["model.norm"] = ["None", "Batch_Norm"]
    exp = experiment_from_dict(tiny_raw)
    assert len(exp.runs) == 8
    assert {r.params["model.norm"] for r in exp.runs} == {"none", "batch"}
    assert len({r.run_id for r in exp.runs}) == 8
    # The run id is a hash of the resolved run config: the same run in another experiment has the same id.
    other = experiment_from_dict({**tiny_raw, "name": "renamed"})
    assert [r.run_id for r in other.runs] == [r.run_id for r in exp.runs]


def test_duplicate_grid_values_are_refused(tiny_raw):
    tiny_raw["grid"]["model.norm"] = ["batch", "bn"]
    with pytest.raises(ConfigError, match="duplicate"):
        experiment_from_dict(tiny_raw)


@pytest.mark.parametrize("name", packaged_configs())
def test_packaged_configs_load_by_name_and_pass_preflight(name):
    exp = load_experiment(name)
    assert exp.name == name and len(exp.runs) > 1
    assert "model.norm" in exp.axes
    preflight(exp)  # data loads, every model builds


def test_every_documented_config_is_packaged():
    assert {"morvan_tf23", "morvan_pt504", "dead_neurons", "cnn_norms", "batch_size", "init_scale"} <= set(
        packaged_configs()
    )


def test_morvan_tf23_is_the_seed_setting():
    cfg = load_experiment("morvan_tf23").runs[0].config
    assert (cfg.model.depth, cfg.model.width, cfg.model.weight_init.std, cfg.model.bias_init) == (
        7,
        30,
        1.0,
        0.1,
    )
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.steps, cfg.train.batch_size) == (
        "sgd",
        0.001,
        251,
        "full",
    )
    assert (cfg.data.n, cfg.data.noise, cfg.model.norm_eps, cfg.model.normalize_input) == (
        500,
        8.0,
        0.001,
        True,
    )


def test_per_sample_norm_on_a_single_input_value_is_refused_before_training():
    result = validate("morvan_tf23", "--set", "grid.model.norm=[none, layer]")
    assert_user_error(result, "normalize_input", "layer norm", "single input value", "grid point")


@pytest.mark.parametrize("override", ["model.width=10000000", "model.width=100000", "model.depth=100000000"])
def test_a_model_too_large_for_the_machine_is_refused_with_its_size(write_config, tiny_raw, tmp_path, override):
    result = runner.invoke(app, ["run", str(write_config(tiny_raw)), "--set", override, "--out", str(tmp_path)])
    assert_user_error(result, "GiB", "more than the", "grid point")
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("name", ["morvan_tf23", "cnn_norms", "init_scale"])
def test_the_memory_estimate_covers_the_parameters_four_times(name):
    """At least the values, the gradient and two optimizer buffers of every parameter the built model has."""
    from normbench.data import build_dataset
    from normbench.engine.plan import memory_needed
    from normbench.nn.models import build_model

    for run in load_experiment(name).runs[:4]:
        data = build_dataset(run.config.data)
        model = build_model(run.config.model, data.input_shape, data.out_features)
        n_params = sum(p.numel() for p in model.parameters())
        assert memory_needed(run.config, data.input_shape, 1, data.out_features) >= 4 * 4 * n_params


# -- grid value expressions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("logspace(-4, 0, 5)", [1e-4, 1e-3, 1e-2, 0.1, 1.0]),
        ("logspace(-2,0,3)", [0.01, 0.1, 1.0]),
        ("linspace(0.1, 1, 10)", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
        ("linspace(1, 1, 1)", [1.0]),
        ("range(1, 6)", [1, 2, 3, 4, 5]),
        ("range(3)", [0, 1, 2]),
        ("range(10, 0, -4)", [10, 6, 2]),
    ],
)
def test_grid_expressions_give_numpy_and_python_values(text, expected):
    values = expand_values(text, "grid.x")
    assert values == expected  # exactly: linspace's 0.30000000000000004 is rounded to the 0.3 a list holds
    assert all(type(v) is type(e) for v, e in zip(values, expected, strict=True))


def test_logspace_values_are_numpys_to_12_digits():
    import numpy as np

    values = expand_values("logspace(-4, 0, 13)", "grid.x")
    assert len(values) == 13 and values[0] == 1e-4 and values[-1] == 1.0
    np.testing.assert_allclose(values, np.logspace(-4, 0, 13), rtol=1e-12)
    assert [float(f"{v:.12g}") for v in values] == values


def test_an_expression_in_a_config_and_in_set_is_the_list_it_stands_for(tiny_raw, write_config):
    listed = experiment_from_dict({**tiny_raw, "grid": {"train.lr": [0.01, 0.1, 1.0]}, "seeds": [1, 2]})
    written = experiment_from_dict({**tiny_raw, "grid": {"train.lr": "logspace(-2, 0, 3)"}, "seeds": "range(1, 3)"})
    assert [r.run_id for r in written.runs] == [r.run_id for r in listed.runs]
    assert written.config.grid == {"train.lr": [0.01, 0.1, 1.0]} and written.config.seeds == [1, 2]
    path = write_config(tiny_raw)
    by_set = load_experiment(path, ["grid.train.lr=logspace(-2, 0, 3)", "grid.model.norm=null", "seeds=range(1,3)"])
    assert by_set.config.shape() == "model.activation (2) x train.lr (3) x seed (2)"
    assert len(by_set.runs) == 12


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("logspace(-4, 0)", "takes 3 numbers (START, STOP, COUNT), got 2"),
        ("linspace(0, 1, 2, 3)", "takes 3 numbers"),
        ("logspace(-4, 0, 0)", "COUNT must be a whole number of at least 1, got 0"),
        ("linspace(0, 1, 2.5)", "COUNT must be a whole number"),
        ("logspace(-4, x, 3)", "'x' is not a number"),
        ("logspace(-4, __import__('os'), 3)", "is not a number"),
        ("linspace(0, inf, 3)", "not a finite number"),
        ("logspace(0, 400, 3)", "overflows float64"),
        ("range(1.5, 4)", "range takes integers"),
        ("range(5, 1)", "has no values"),
        ("range(1, 5, 0)", "step must not be zero"),
        ("range()", "range takes 1 to 3 integers"),
        ("geomspace(1, 2, 3)", "expected a list of values or logspace"),
        ("batch", "expected a list of values"),
    ],
)
def test_a_malformed_grid_expression_is_one_line_naming_the_axis(write_config, tiny_raw, text, fragment):
    tiny_raw["grid"]["train.lr"] = text
    assert_user_error(validate(str(write_config(tiny_raw))), "grid.train.lr: ", fragment)


def test_a_malformed_seeds_expression_names_seeds(write_config, tiny_raw):
    assert_user_error(validate(str(write_config(tiny_raw)), "--set", "seeds=range(0)"), "seeds: ", "has no values")


# -- zipped axes --------------------------------------------------------------------------------------------------

ZIP = [{"train.batch_size": 2, "train.lr": 0.01}, {"train.batch_size": 32, "train.lr": 0.16}]


def test_zipped_settings_are_one_axis_crossed_with_the_others(tiny_raw):
    tiny_raw["grid"] = {"zip": ZIP, "model.norm": ["batch", "group"]}
    exp = experiment_from_dict(tiny_raw)
    assert len(exp.runs) == 2 * 2 * 2  # zip x norm x seed
    assert exp.axes == ["train.batch_size", "train.lr", "model.norm", "seed"]
    assert exp.config.shape() == "zip(train.batch_size, train.lr) (2) x model.norm (2) x seed (2)"
    pairs = {(r.params["train.batch_size"], r.params["train.lr"]) for r in exp.runs}
    assert pairs == {(2, 0.01), (32, 0.16)}
    for r in exp.runs:
        assert (r.config.train.batch_size, r.config.train.lr) == (r.params["train.batch_size"], r.params["train.lr"])
    # The same runs written as one-key axes (here a single pair) have the same ids: ids hash the run, not the grid.
    one = experiment_from_dict(
        {**tiny_raw, "grid": {"train.batch_size": [2], "train.lr": [0.01], "model.norm": ["batch"]}}
    )
    assert {r.run_id for r in one.runs} <= {r.run_id for r in exp.runs}


def test_several_zip_groups_and_the_seed_in_a_zip(tiny_raw):
    tiny_raw.pop("seeds")
    tiny_raw["grid"] = {
        "zip_size": [{"model.depth": 2, "model.width": 16}, {"model.depth": 4, "model.width": 8}],
        "zip_opt": [{"train.lr": 0.01, "seed": 1}, {"train.lr": 0.001, "seed": 2}, {"train.lr": 0.1, "seed": 3}],
    }
    exp = experiment_from_dict(tiny_raw)
    assert len(exp.runs) == 6
    assert exp.axes == ["model.depth", "model.width", "train.lr", "seed"]


@pytest.mark.parametrize(
    ("grid", "fragments"),
    [
        ({"zip": [{"train.lr": 0.1}, {"train.batch_size": 2}]}, ["grid: zip entry 2 lacks train.lr", "same keys"]),
        ({"zip": [{"train.lr": 0.1}, 3]}, ["grid: zip entry 2: expected a mapping"]),
        ({"zip": [{}]}, ["zip entry 1: expected a mapping"]),
        ({"zip": []}, ["'zip' has an empty list"]),
        ({"zip": {"train.lr": 0.1}}, ["grid.zip", "valid list"]),
        ({"zip": [{"train.lr": 0.1}], "train.lr": [0.2]}, ["'train.lr' is given twice"]),
        ({"zip_a": [{"train.lr": 0.1}], "zip_b": [{"train.lr": 0.2}]}, ["'train.lr' is given twice"]),
        ({"zip": [{"model.weight_init": "xavier"}], "model.weight_init.std": [1.0]}, ["set the same field"]),
        ({"zip": [{"model.nrom": "batch"}]}, ["grid.model.nrom", "unknown config key"]),
        ({"zip": [{"seeds": [1]}]}, ["'seeds' cannot vary"]),
        ({"zip": [{"zip": [1]}]}, ["'zip' cannot vary"]),
        ({"zip": [{"seed": 1}]}, ["`seeds:` or as grid key `seed`, not both"]),
        ({"zip": [{"model.norm": "bogus", "train.lr": 0.1}]}, ["grid point", "model.norm='bogus'", "unknown norm"]),
    ],
)
def test_a_bad_zip_is_one_line(write_config, tiny_raw, grid, fragments):
    tiny_raw["grid"] = grid
    assert_user_error(validate(str(write_config(tiny_raw))), *fragments)


def test_zipped_keys_are_axes_of_the_results(tmp_path, write_config, tiny_raw):
    import pandas as pd

    from normbench.results import experiment_axes, experiment_axis_groups

    tiny_raw |= {"seeds": [1], "grid": {"model.norm": ["batch"], "zip": ZIP}}
    result = runner.invoke(app, ["run", str(write_config(tiny_raw)), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    exp_dir = tmp_path / "tiny"
    assert experiment_axes(exp_dir) == ["model.norm", "train.batch_size", "train.lr", "seed"]
    assert experiment_axis_groups(exp_dir) == [["model.norm"], ["train.batch_size", "train.lr"], ["seed"]]
    runs = pd.read_parquet(exp_dir / "runs.parquet")
    assert list(runs.columns[:5]) == ["run_id", "model.norm", "train.batch_size", "train.lr", "seed"]
    assert sorted(zip(runs["train.batch_size"], runs["train.lr"], strict=True)) == [(2, 0.01), (32, 0.16)]


# -- an override the grid would overwrite ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "override", "fragments"),
    [
        (
            None,
            "model.norm=batch",
            ["--set 'model.norm=batch'", "model.norm is a grid axis", "grid.model.norm=[batch]"],
        ),
        (None, "model.norm=bogus", ["model.norm is a grid axis", "grid.model.norm=[bogus]"]),
        (None, "seed=3", ["seed is a grid axis (seeds: [1, 2])", "--set 'seeds=[3]'"]),
        (
            lambda r: r.pop("seeds") and r["grid"].update(seed=[1, 2]),
            "seed=3",
            ["seed is a grid axis (grid.seed: [1, 2])", "--set 'grid.seed=[3]'"],
        ),
        (lambda r: r["grid"].update(zip=ZIP), "train.lr=0.5", ["train.lr is a grid axis (in grid.zip)", "grid.zip"]),
        (
            lambda r: r["grid"].update({"model.weight_init": ["xavier", "kaiming"]}),
            "model.weight_init.std=0.1",
            ["model.weight_init is a grid axis"],
        ),
    ],
)
def test_an_override_the_grid_would_overwrite_is_an_error(write_config, tiny_raw, edit, override, fragments):
    if edit:
        edit(tiny_raw)
    assert_user_error(validate(str(write_config(tiny_raw)), "--set", override), *fragments, "ignored")


def test_grid_null_removes_an_axis_so_the_key_can_be_set(write_config, tiny_raw):
    path = write_config(tiny_raw)
    with pytest.raises(ConfigError, match="grid axis"):
        load_experiment(path, ["grid.model.norm=[batch]", "model.norm=none"])
    exp = load_experiment(path, ["grid.model.norm=null", "model.norm=batch", "model.width=16"])
    assert {r.config.model.norm for r in exp.runs} == {"batch"} and "model.norm" not in exp.axes
    assert {r.config.model.width for r in exp.runs} == {16}
    assert len(exp.runs) == 4  # activation x seed


@pytest.mark.parametrize("kernel", ["written-out", "autograd"])
def test_runs_of_one_computation_give_the_same_tables(tmp_path, tiny_raw, kernel):
    """RunConfig.computation leaves out a norm's options in a run without a norm: such runs (BN's momentum and eps
    changed, no BN) train and record bit for bit alike, while with BN the same change gives other numbers."""
    from normbench.results import load_table
    from normbench.sweep import SweepOptions, run_experiment

    tiny_raw["grid"] = {"model.norm": ["none", "batch"]}
    tiny_raw["model"]["normalize_input"] = True
    other = yaml.safe_load(yaml.safe_dump(tiny_raw))
    other["name"] = "other"
    other["model"] |= {"norm_momentum": 0.6, "norm_eps": 1e-3, "norm_affine": False, "norm_groups": 4}
    a, b = experiment_from_dict(tiny_raw), experiment_from_dict(other)
    for exp in (a, b):
        run_experiment(exp, tmp_path, SweepOptions(kernel=kernel), console=Console(quiet=True))
    for run_a, run_b in zip(a.runs, b.runs, strict=True):
        assert run_a.run_id != run_b.run_id
        same = run_a.config.computation() == run_b.config.computation()
        assert same == (run_a.params["model.norm"] == "none")
        for table in ("curves", "layers", "histograms"):
            ta = load_table(tmp_path / "tiny", table, [run_a.run_id]).drop(columns="run_id")
            tb = load_table(tmp_path / "other", table, [run_b.run_id]).drop(columns="run_id")
            assert ta.equals(tb) == same, (table, run_a.params)
