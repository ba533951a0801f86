"""End to end through the command line: run, summary, plot, list, on a tiny experiment."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from normbench.cli import EXAMPLES, app

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
    assert "hist_post_act_activation-relu.png" in figures and "dist_activation-tanh.png" in figures
    for name in figures:
        assert (out / "tiny" / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    invoke("plot", str(out / "tiny"), "--format", "svg", "--point", "pre_norm", "--compare", "model.activation")
    by = out / "tiny" / "figures" / "by-model.activation"  # another comparison: its own folder, the first kept
    assert any(p.suffix == ".svg" for p in by.iterdir()) and (out / "tiny" / "figures" / "cost.png").exists()


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


def test_list_shows_a_packaged_config_it_cannot_read_without_a_description(tmp_path, monkeypatch):
    from normbench import config

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "good.yaml").write_text("description: a readable config\n")
    (folder / "broken.yaml").write_text("description: [unclosed\n")
    (folder / "binary.yaml").write_bytes(b"\xff\xfe not text")
    monkeypatch.setattr(config, "PACKAGED_CONFIGS", [folder])
    out = invoke("list").stdout
    assert "a readable config" in out and "broken" in out and "binary" in out


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


# -- the examples of --help and of README's Commands and Configs sections: each one runs -------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
# README examples of what is refused, with a fragment of the message that says what to type instead.
README_ERRORS = {
    "--set model.norm=batch": ("morvan_tf23", "--set 'grid.model.norm=[batch]'"),
    "--set seed=3": ("morvan_tf23", "--set 'seeds=[3]'"),
}


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory):
    """A folder whose results/morvan_tf23 holds a finished small sweep of model.norm x model.activation x train.lr,
    which is what the examples name."""
    root = tmp_path_factory.mktemp("examples")
    args = ["run", "morvan_tf23", "--out", str(root / "results"), "--set", "seeds=[1]", "--set", "train.steps=6"]
    args += ["--set", "data.n=64", "--set", "record.hist_every=3", "--set", "grid.train.lr=[0.01, 0.001]"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # diverged runs are results; a failed run is exit 1
    return root


def run_example(line: str, where: Path, monkeypatch):
    args = shlex.split(line)
    assert args[0] == "normbench", line
    monkeypatch.chdir(where)
    return runner.invoke(app, args[1:])


def help_examples() -> list[str]:
    return [x for lines in EXAMPLES.values() for x in lines]


@pytest.mark.parametrize("example", help_examples())
def test_every_help_example_works(examples_dir, monkeypatch, example):
    result = run_example(example, examples_dir, monkeypatch)
    assert result.exit_code == 0, (example, result.output)


def click_commands(command=None, path=()):
    """(path, click command) for the app and every command under it."""
    command = command or typer.main.get_command(app)
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from click_commands(sub, (*path, name))


def test_help_shows_its_examples_and_flags_as_flags():
    for path, command in click_commands():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300"}, terminal_width=300)
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
        for example in EXAMPLES.get(path[-1] if path else "", []):
            assert example in result.output, (path, example, result.output)
        for param in command.params:
            if getattr(param, "is_flag", False) and not param.hidden:
                assert param.opts[0] in result.output, (path, param.opts)
        # every --set / --where an option's help shows is one of the examples run above
        for param in command.params:
            for opt, value in re.findall(r"--(set|where) ('[^']*'|[^\s;,)]+)", param.help or ""):
                shown = f"--{opt} {value.rstrip('.')}"
                assert any(shown in x for x in help_examples()), (path, shown)


def readme_sections() -> str:
    text = README.read_text()
    parts = []
    for title in ("## Commands", "## Configs"):
        start = text.index(title)
        parts.append(text[start : text.index("\n## ", start + len(title))])
    return "\n".join(parts)


def readme_spans(prefix: str) -> list[str]:
    """Inline code of README's Commands and Configs sections starting with `prefix`, but not the syntax
    templates (`normbench run CONFIG [--out results] ...`, `--where KEY=VALUE ...`)."""
    spans = re.findall(r"`([^`\n]+)`", readme_sections())
    template = re.compile(r"\b[A-Z]{2,}\b|\[--|\\\||\.\.\.$")
    return [s for s in spans if s.startswith(prefix) and not template.search(s)]


def test_readme_examples_are_found():
    assert len(readme_spans("normbench ")) >= 3 and len(readme_spans("--set ")) >= 6
    long = ("normbench claims", "normbench demo", "normbench bench")  # minutes each: run by .ci/run, not here
    assert not [c for c in readme_spans("normbench ") if c.startswith(long)]
    assert set(README_ERRORS) <= set(readme_spans("--set "))


@pytest.fixture(scope="module")
def packaged_dir(tmp_path_factory):
    """A folder whose results/<name> holds each packaged config's grid, as `normbench run NAME` (or the demo)
    leaves it: config.yaml and runs.parquet (every run missing: whether runs are finished does not change what a
    config does to the folder)."""
    from normbench.config import load_experiment, packaged_configs
    from normbench.store import ExperimentStore

    root = tmp_path_factory.mktemp("packaged")
    for name in packaged_configs():
        exp = load_experiment(name)
        store = ExperimentStore(root / "results", exp.name)
        store.prepare(exp)
        store.write_runs_table(exp)
    return root


@pytest.mark.parametrize("command", readme_spans("normbench "))
def test_every_readme_command_works(examples_dir, packaged_dir, monkeypatch, command):
    where = examples_dir
    if command.startswith("normbench run "):
        command += " --dry-run"  # the config and options are what can be wrong; training is tested elsewhere
        where = packaged_dir  # into results/<name> as the packaged config (or the demo) wrote it
    result = run_example(command, where, monkeypatch)
    assert result.exit_code == 0, (command, result.output)


def readme_run_commands() -> list[str]:
    """Every `normbench run <packaged config> ...` of README (any section, spans over line breaks joined) that
    writes into the default results folder."""
    from normbench.config import packaged_configs

    spans = [" ".join(s.split()) for s in re.findall(r"`(normbench run [^`]+)`", README.read_text())]
    template = re.compile(r"\b[A-Z]{2,}\b|\[--|\.\.\.$")
    names = set(packaged_configs())
    return [s for s in spans if s.split()[2] in names and "--out" not in s and not template.search(s)]


def test_readme_run_commands_are_found():
    commands = readme_run_commands()
    assert sum("--set" in c for c in commands) >= 3, commands


@pytest.mark.parametrize("command", readme_run_commands())
def test_every_readme_run_command_keeps_the_folder_it_writes_into(packaged_dir, monkeypatch, command):
    """After `normbench run NAME` (or the demo), each of README's run commands is accepted as README says: the
    same runs, a grid that extends or is within the folder's, or a folder of its own (`--set name=...`)."""
    result = run_example(command + " --dry-run", packaged_dir, monkeypatch)
    assert result.exit_code == 0, (command, result.output)
    assert "would no longer list" not in result.output


def test_readme_refused_example_is_refused(packaged_dir, monkeypatch):
    """README: `--set train.lr=0.01` on the packaged folder changes every run, so it is refused."""
    from normbench.config import load_experiment

    assert "`--set train.lr=0.01` changes every run" in README.read_text()
    n = len(load_experiment("morvan_tf23").runs)
    result = run_example("normbench run morvan_tf23 --set train.lr=0.01 --dry-run", packaged_dir, monkeypatch)
    assert result.exit_code == 2, result.output
    assert f"would no longer list {n} of the folder's {n} runs" in result.output, result.output


@pytest.mark.parametrize("option", readme_spans("--set "))
def test_every_readme_set_works(option):
    """On morvan_tf23, the config README's commands use; the ones README shows refused are refused as it says."""
    config, fix = README_ERRORS.get(option, ("morvan_tf23", None))
    result = runner.invoke(app, ["validate", config, *shlex.split(option)])
    if fix is None:
        assert result.exit_code == 0, (option, result.output)
    else:
        assert result.exit_code == 2 and fix in result.output, (option, result.output)


@pytest.mark.parametrize("option", readme_spans("--where "))
def test_every_readme_where_works(examples_dir, monkeypatch, option):
    result = run_example(f"normbench summary results/morvan_tf23 {option}", examples_dir, monkeypatch)
    assert result.exit_code == 0, (option, result.output)


def test_readme_config_blocks_load():
    from normbench.config import experiment_from_dict

    blocks = re.findall(r"```yaml\n(.*?)```", readme_sections(), re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        raw = yaml.safe_load(block)
        assert experiment_from_dict({"name": "readme", **raw}).runs


# -- normbench list --------------------------------------------------------------------------------------------


def test_list_in_a_pipe_is_one_whole_line_per_entry():
    from normbench.registry import NORMS

    lines = invoke("list").stdout.splitlines()
    for name in NORMS:
        help = NORMS.help(name) + (f" Also: {', '.join(NORMS.aliases(name))}." if NORMS.aliases(name) else "")
        assert any(line.split() and line.split()[0] == name and line.endswith(help) for line in lines)
    assert "bn" in NORMS.aliases("batch") and "Also: bn, batchnorm." in "".join(lines)  # the other names, listed
    assert NORMS.help("switchable").endswith("the weights are over LN and BN.")  # the whole first paragraph
    assert any(line.startswith("  morvan_tf23") and "noisy parabola" in line for line in lines)  # descriptions


def test_list_entries_wrap_under_themselves_in_a_narrow_terminal():
    from normbench.cli import entry_lines

    text = "Switchable norm (Luo et al. 2018): learned softmax weights over IN, LN and BN statistics, separately."
    lines = entry_lines("switchable", text, 16, 80)
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("  switchable    Switchable") and lines[1].startswith(" " * 16 + "IN, LN")
    assert " ".join(" ".join(lines).split()) == "switchable " + text  # nothing cut
    assert entry_lines("switchable", text, 16, None) == ["  switchable    " + text]


# -- --where ---------------------------------------------------------------------------------------------------


def where_records(out: Path, *where: str) -> list[dict]:
    args = ["summary", str(out), "--format", "json"]
    for w in where:
        args += ["--where", w]
    return json.loads(invoke(*args).stdout)


def test_where_keeps_the_matching_runs(examples_dir):
    out = examples_dir / "results"
    everything = where_records(out)
    assert len(everything) == 8
    batch = where_records(out, "model.norm=batch")
    assert len(batch) == 4 and {r["model.norm"] for r in batch} == {"batch"}
    assert where_records(out, "norm=batch") == batch  # a short key
    assert where_records(out, "norm=bn") == where_records(out, "model.norm=BatchNorm") == batch  # as a config spells it
    both = where_records(out, "norm=batch", "train.lr=0.01")
    assert len(both) == 2 and {(r["model.norm"], r["train.lr"]) for r in both} == {("batch", 0.01)}
    assert where_records(out, "norm=batch", "lr=1e-2") == both  # YAML reads 1e-2 as text: still the number
    assert len(where_records(out, "norm=[none,batch]", "activation=relu")) == 4  # a list: any of its values
    assert len(where_records(out, "activation=relu", "activation=tanh")) == 8  # a key again: any of its values
    assert len(where_records(out, "seed=1")) == 8
    csv = invoke("summary", str(out), "--format", "csv", "--where", "norm=none").stdout
    assert len(csv.strip().splitlines()) == 1 + 4


@pytest.mark.parametrize(
    ("where", "fragments"),
    [
        (["nrom=batch"], ["--where 'nrom' is not a grid key of morvan_tf23", "grid keys: model.norm"]),
        (["norm=bogus"], ["--where norm=bogus matches no run of morvan_tf23", "model.norm values: none, batch"]),
        (["norm=ln"], ["--where norm=ln matches no run of morvan_tf23", "model.norm values: none, batch"]),
        (["norm=batch", "lr=0.5"], ["--where lr=0.5 matches no run", "train.lr values: 0.01, 0.001"]),
        (["norm"], ["--where 'norm': expected KEY=VALUE"]),
        (["norm=[batch"], ["not valid YAML"]),
    ],
)
@pytest.mark.parametrize("command", ["summary", "plot"])
def test_a_bad_where_is_one_line(examples_dir, command, where, fragments):
    args = [command, str(examples_dir / "results" / "morvan_tf23")]
    for w in where:
        args += ["--where", w]
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), lines[0]


def test_ambiguous_short_key_and_a_folder_of_experiments(tmp_path, write_config, tiny_raw):
    from normbench.results import SelectionError, select_runs

    runs = pd.DataFrame({"run_id": ["a", "b"], "model.weight_init.std": [0.1, 1.0], "data.std": [1, 2]})
    with pytest.raises(SelectionError, match=r"std' matches several grid keys.*model\.weight_init\.std, data\.std"):
        select_runs(runs, ["std=1"], list(runs.columns[1:]), "x")
    assert select_runs(runs, ["weight_init.std=0.1"], list(runs.columns[1:]), "x").run_id.tolist() == ["a"]

    out = tmp_path / "results"
    tiny_raw |= {"seeds": [1], "grid": {"model.norm": ["none", "batch"]}}
    invoke("run", str(write_config(tiny_raw, "a.yaml")), "--out", str(out))
    invoke(
        "run",
        str(write_config({**tiny_raw, "name": "other", "grid": {"model.depth": [2, 3]}}, "b.yaml")),
        "--out",
        str(out),
    )
    result = invoke("summary", str(out), "--format", "json", "--where", "norm=batch")
    assert [r["experiment"] for r in json.loads(result.stdout)] == ["tiny"]
    assert "left out: --where 'norm' is not a grid key of other" in result.stderr
    result = runner.invoke(app, ["summary", str(out), "--where", "width=8"])
    assert result.exit_code == 2 and "no experiment has a run matching --where" in result.output


def test_plot_where_draws_only_the_matching_runs(examples_dir, monkeypatch):
    from normbench.results import load_runs
    from normbench.views import render as plot_module

    seen = []
    real = plot_module.plot_experiments

    def spy(exps, *args, where=None, **kw):
        seen.extend(where(load_runs(e)).sum() for e in exps)
        return real(exps, *args, where=where, **kw)

    monkeypatch.setattr(plot_module, "plot_experiments", spy)
    invoke("plot", str(examples_dir / "results"), "--where", "norm=batch", "--where", "lr=0.01")
    assert seen == [2]
