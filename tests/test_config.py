"""Config validation: every kind of bad input is one line naming the field, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import ConfigError, experiment_from_dict, load_experiment, packaged_configs
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
