"""`normbench claims`: the verdict rules on synthetic result tables (each verdict reachable, an effect within seed
noise never supported), the packaged claims file against the packaged configs, bad claims files, and one quick
claim end to end through the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from normbench.claims import (
    Results,
    Setting,
    compare_verdict,
    evaluate,
    flat_verdict,
    load_claims,
    threshold_verdict,
)
from normbench.claims.schema import Criterion, check_references
from normbench.cli import app
from normbench.config import ConfigError, packaged_configs

runner = CliRunner()
NAN, INF = math.nan, math.inf


def runs_table(groups: dict, column: str = "final_test_accuracy", key: str = "model.norm", status=None) -> pd.DataFrame:
    """runs.parquet's shape: one row per (group value, seed), the number in `column`."""
    rows = []
    for value, numbers in groups.items():
        for seed, x in enumerate(numbers, 1):
            st = (status or {}).get((value, seed), "ok")
            rows.append({"run_id": f"{value}-{seed}", key: value, "seed": seed, "status": st, column: x})
    return pd.DataFrame(rows)


def setting(**fields) -> Setting:
    return Setting.model_validate({"setting": "synthetic", "experiment": "e", **fields})


def verdict_of(s: Setting, runs: pd.DataFrame, **tables) -> str:
    verdict, text, _ = evaluate(s, Results(runs, tables))
    assert text  # a measurement is always described
    return verdict.verdict


BN_VS_NONE = {"kind": "greater_than", "a": {"model.norm": "batch"}, "b": {"model.norm": "none"}}


# -- verdict rules ---------------------------------------------------------------------------------------------------


def test_threshold_gives_each_verdict():
    # The 95% interval of the mean (Student's t, 2 degrees of freedom: 4.30 standard errors) against the threshold.
    assert threshold_verdict([0.80, 0.81, 0.82], at_least=0.5).verdict == "supported"  # [0.785, 0.835]
    assert threshold_verdict([0.1, 0.2, 0.3], at_least=0.5).verdict == "not supported"  # [-0.048, 0.448]
    assert threshold_verdict([0.4, 0.6, 0.7], at_least=0.5).verdict == "inconclusive"  # [0.21, 0.97]
    assert threshold_verdict([0.01, 0.02, 0.05], at_most=0.1).verdict == "supported"  # [-0.025, 0.078]
    # A seed without a number (a diverged run's dead fraction) does not show the property.
    v = threshold_verdict([NAN, NAN, NAN], at_least=0.5)
    assert v.verdict == "not supported" and "no seed has a number" in v.reason
    assert threshold_verdict([0.9, 0.9], at_least=0.5).verdict == "inconclusive"  # fewer than 3 seeds
    assert threshold_verdict([0.8, 0.8, 0.8, NAN], at_least=0.5).verdict == "inconclusive"  # one without a number
    assert threshold_verdict([1.0, 1.0, 1.0], at_least=1).verdict == "supported"  # no spread: the mean itself
    assert threshold_verdict([INF, INF, INF], at_least=10).verdict == "supported"  # every seed passes
    assert threshold_verdict([5, 20, INF], at_least=10).verdict == "inconclusive"


def test_threshold_verdict_settles_with_more_seeds_instead_of_hanging_on_the_worst_one():
    # 19 seeds well below 0.1 and one above it: 'every seed passes' would call it inconclusive for ever, and flip
    # on which seed crosses; the mean's interval lies below 0.1.
    values = [0.02, 0.03, 0.05, 0.01, 0.04] * 4
    values[-1] = 0.125
    assert threshold_verdict(values, at_most=0.1).verdict == "supported"
    assert threshold_verdict(values[:3], at_most=0.1).verdict == "supported"


def test_comparison_gives_each_verdict_from_runs_tables():
    s = setting(measure={"quantity": "final_test_accuracy"}, criterion=BN_VS_NONE)
    assert verdict_of(s, runs_table({"batch": [0.95, 0.96, 0.97], "none": [0.80, 0.82, 0.81]})) == "supported"
    assert verdict_of(s, runs_table({"batch": [0.80, 0.82, 0.81], "none": [0.95, 0.96, 0.97]})) == "not supported"
    assert verdict_of(s, runs_table({"batch": [0.90, 0.95, 0.99], "none": [0.89, 0.94, 0.97]})) == "inconclusive"


def test_a_difference_within_seed_noise_is_inconclusive_not_supported():
    # batch's mean is higher (0.937 vs 0.917) and batch wins for 2 of 3 seeds, but the seeds spread by 0.1.
    a, b = [0.88, 0.95, 0.98], [0.85, 0.92, 0.98]
    assert np.mean(a) > np.mean(b)
    v = compare_verdict("greater_than", a, b)
    assert v.verdict == "inconclusive" and "within seed noise" in v.reason
    # The same difference with tight seeds is supported; a margin larger than it makes it not supported.
    assert compare_verdict("greater_than", [0.937, 0.938, 0.936], [0.917, 0.918, 0.916]).verdict == "supported"
    tight = compare_verdict("greater_than", [0.937, 0.938, 0.936], [0.917, 0.918, 0.916], margin=0.05)
    assert tight.verdict == "not supported"
    # Identical numbers: no effect either way, so not supported only with a margin, never supported.
    assert compare_verdict("less_than", [0.5] * 3, [0.5] * 3).verdict == "inconclusive"


def test_comparison_with_infinite_values_uses_the_seed_ranges():
    s = setting(
        measure={"quantity": "steps_to", "split": "train", "mode": "train", "field": "loss", "at_most": 0.5},
        criterion={"kind": "less_than", "a": {"model.norm": "batch"}, "b": {"model.norm": "none"}},
    )
    runs = runs_table({"batch": [1, 2, 3], "none": [1, 2, 3]}, column="unused")
    curves = []
    reach = {"batch": [10, 20, 15], "none": [None, None, 30]}  # None: the loss never falls to 0.5
    for norm, steps in reach.items():
        for seed, step in enumerate(steps, 1):
            for t in range(0, 41, 5):
                loss = 0.1 if step is not None and t >= step else 2.0
                curves.append({"run_id": f"{norm}-{seed}", "step": t, "split": "train", "mode": "train", "loss": loss})
    assert verdict_of(s, runs, curves=pd.DataFrame(curves)) == "supported"  # 10-20 vs 30, inf, inf
    assert compare_verdict("less_than", [10, 20, 40], [30, INF, INF]).verdict == "inconclusive"  # ranges overlap
    assert compare_verdict("less_than", [INF, INF, INF], [10, 20, 30]).verdict == "not supported"


def test_diverged_losses_count_as_infinite_and_diverged_layers_have_no_number():
    status = {("none", s): "diverged" for s in (1, 2, 3)}
    runs = runs_table({"batch": [80.0, 81.0, 83.0], "none": [NAN, NAN, NAN]}, column="final_train_loss", status=status)
    s = setting(
        measure={"quantity": "final_train_loss"},
        criterion={"kind": "less_than", "a": {"model.norm": "batch"}, "b": {"model.norm": "none"}},
    )
    assert verdict_of(s, runs) == "supported"
    # Dead units: the diverged runs' last layers are not finite, so no seed shows dead units.
    layers = pd.DataFrame(
        [
            {"run_id": rid, "step": st, "layer": layer, "dead_fraction": 0.4 if st == 0 else 0.9}
            for rid in runs.run_id
            for st in (0, 1)
            for layer in (1, 2)
        ]
    )
    dead = setting(
        where={"model.norm": "none"},
        measure={"quantity": "dead_fraction"},
        criterion={"kind": "threshold", "at_least": 0.5},
    )
    verdict, text, _ = evaluate(dead, Results(runs, {"layers": layers}))
    assert verdict.verdict == "not supported" and "3/3 runs diverged" in text
    first = setting(
        where={"model.norm": "none"},
        measure={"quantity": "dead_fraction", "step": "first"},
        criterion={"kind": "threshold", "at_most": 0.5},
    )
    assert verdict_of(first, runs, layers=layers) == "supported"  # step 0 is before the divergence


def test_not_worse_than_gives_each_verdict_and_accounts_for_seed_spread():
    """a >= b - margin: a slightly lower a is no worse within the margin; far lower is; noisy is inconclusive."""
    b = [0.970, 0.971, 0.972]
    assert compare_verdict("not_less_than", [0.966, 0.967, 0.968], b, 0.01).verdict == "supported"
    assert compare_verdict("not_less_than", [0.990, 0.991, 0.992], b, 0.01).verdict == "supported"  # better
    assert compare_verdict("not_less_than", [0.940, 0.941, 0.942], b, 0.01).verdict == "not supported"
    assert compare_verdict("not_less_than", [0.93, 0.97, 0.99], b, 0.01).verdict == "inconclusive"
    # not_greater_than mirrors it (a <= b + margin): a loss slightly above is fine, far above is not.
    assert compare_verdict("not_greater_than", [1.04, 1.05, 1.06], [1.0, 1.01, 1.02], 0.1).verdict == "supported"
    assert compare_verdict("not_greater_than", [1.54, 1.55, 1.56], [1.0, 1.01, 1.02], 0.1).verdict == "not supported"
    # Infinite values (a diverged run's loss): the seeds' ranges decide.
    assert compare_verdict("not_greater_than", [1.0, 1.05, 1.1], [1.05, INF, INF], 0.1).verdict == "supported"
    assert compare_verdict("not_greater_than", [INF, INF, INF], [1.0, 1.1, 1.2], 0.1).verdict == "not supported"
    crit = Criterion(kind="not_less_than", a={"model.dropout": 0.0}, b={"model.dropout": 0.3}, margin=0.01)
    assert crit.describe() == "dropout=0.0 >= dropout=0.3 - 0.01"
    with pytest.raises(ValueError, match="margin > 0"):
        Criterion(kind="not_less_than", a={"model.dropout": 0.0}, b={"model.dropout": 0.3})


def test_equal_within_and_flat_give_each_verdict():
    assert compare_verdict("equal_within", [0.970, 0.971, 0.972], [0.971, 0.972, 0.970], 0.01).verdict == "supported"
    assert compare_verdict("equal_within", [0.90, 0.91, 0.90], [0.97, 0.97, 0.98], 0.01).verdict == "not supported"
    assert compare_verdict("equal_within", [0.93, 0.97, 0.99], [0.95, 0.96, 0.99], 0.01).verdict == "inconclusive"
    flat = {2: [0.95, 0.951, 0.949], 8: [0.952, 0.95, 0.951], 32: [0.95, 0.949, 0.951]}
    assert flat_verdict(flat, below=0.02).verdict == "supported"
    steep = {2: [0.25, 0.28, 0.22], 8: [0.9, 0.91, 0.9], 32: [0.98, 0.97, 0.98]}
    assert flat_verdict(steep, below=0.02).verdict == "not supported"
    noisy = {2: [0.90, 0.95, 0.99], 32: [0.91, 0.96, 0.97]}
    assert flat_verdict(noisy, below=0.02).verdict == "inconclusive"


def test_measures_over_a_sweep_and_from_layer_and_curve_tables():
    # largest_passing: the largest lr whose accuracy reaches 0.9 (log10), -inf when none does.
    rows = []
    best = {"batch": [1.0, 1.0, 3.0], "none": [0.1, 0.3, None]}
    for norm, lrs in best.items():
        for seed, top in enumerate(lrs, 1):
            for lr in (0.01, 0.1, 0.3, 1.0, 3.0):
                acc = 0.95 if top is not None and lr <= top else 0.1
                rows.append(
                    {
                        "run_id": f"{norm}-{seed}-{lr}",
                        "model.norm": norm,
                        "train.lr": lr,
                        "seed": seed,
                        "status": "ok",
                        "final_test_accuracy": acc,
                    }
                )
    runs = pd.DataFrame(rows)
    measure = {
        "quantity": "final_test_accuracy",
        "over": "train.lr",
        "reduce": "largest_passing",
        "passing": {"at_least": 0.9},
        "log": True,
    }
    s = setting(measure=measure, criterion=BN_VS_NONE)
    verdict, _, values = evaluate(s, Results(runs))
    assert verdict.verdict == "supported"
    assert values["norm=batch"] == pytest.approx([0.0, 0.0, math.log10(3.0)])
    assert values["norm=none"][:2] == pytest.approx([-1.0, math.log10(0.3)]) and values["norm=none"][2] == -INF
    share = setting(measure={**measure, "reduce": "share_passing", "log": False}, criterion=BN_VS_NONE)
    assert evaluate(share, Results(runs))[2]["norm=batch"] == pytest.approx([0.8, 0.8, 1.0])

    # layer_spread (log10 max/min over layers) and sn_spread (largest difference of one weight between layers).
    runs = runs_table({"batch": [0, 0, 0], "none": [0, 0, 0]}, column="unused")
    layers = []
    for rid in runs.run_id:
        for layer in (1, 2, 3):
            vanishing = rid.startswith("none")
            layers.append(
                {
                    "run_id": rid,
                    "step": 0,
                    "layer": layer,
                    "backprop_norm": 10.0 ** (-layer if vanishing else 0),
                    "sn_var_bn": 0.2 * layer if vanishing else 0.5,
                    "sn_var_ln": 0.5,
                }
            )
    spread = setting(
        measure={"quantity": "layer_spread", "column": "backprop_norm", "step": "first"},
        criterion={"kind": "less_than", "a": {"model.norm": "batch"}, "b": {"model.norm": "none"}},
    )
    verdict, _, values = evaluate(spread, Results(runs, {"layers": pd.DataFrame(layers)}))
    assert verdict.verdict == "supported" and values["norm=none"] == pytest.approx([2.0] * 3)
    sn = setting(
        where={"model.norm": "none"},
        measure={"quantity": "sn_spread"},
        criterion={"kind": "threshold", "at_least": 0.1},
    )
    verdict, _, values = evaluate(sn, Results(runs, {"layers": pd.DataFrame(layers)}))
    assert verdict.verdict == "supported" and values["norm=none"] == pytest.approx([0.4] * 3)

    # generalization_gap: train minus test accuracy at the last step.
    curves = [
        {"run_id": rid, "step": st, "split": split, "mode": "eval", "accuracy": acc}
        for rid in runs.run_id
        for st in (0, 10)
        for split, acc in (
            ("train", 1.0 if st else 0.1),
            ("test", (0.97 if rid.startswith("batch") else 0.9) if st else 0.1),
        )
    ]
    gap = setting(
        measure={"quantity": "generalization_gap", "field": "accuracy", "mode": "eval"},
        criterion={"kind": "less_than", "a": {"model.norm": "batch"}, "b": {"model.norm": "none"}},
    )
    verdict, _, values = evaluate(gap, Results(runs, {"curves": pd.DataFrame(curves)}))
    assert verdict.verdict == "supported" and values["norm=batch"] == pytest.approx([0.03] * 3)


def test_a_verdict_that_differs_between_kernels_depends_on_rounding():
    from normbench.claims import Claim, Source, load_claims
    from normbench.claims.check import _row

    s = setting(measure={"quantity": "dead_fraction"}, where={}, criterion={"kind": "threshold", "at_most": 0.1})
    claim = Claim(id="c", claim="A claim.", source="x", settings=[s])
    book = load_claims()
    src = Source(title="t", author="a")

    def results(dead: list[float]) -> Results:
        runs = runs_table({"batch": [0.0] * len(dead)}, column="final_train_loss")
        runs["dead_fraction"] = [[d] for d in dead]
        return Results(runs)

    book.experiments["e"] = book.experiments["morvan_tf23"]
    tight, wide = results([0.02, 0.03, 0.04]), results([0.02, 0.03, 0.2])
    same = _row(book, claim, src, s, {"written-out": tight, "autograd": tight}, quick=False)
    assert same.verdict == "supported" and set(same.by_kernel) == {"written-out", "autograd"}
    assert "the same under written-out and autograd" in same.reason
    differ = _row(book, claim, src, s, {"written-out": tight, "autograd": wide}, quick=False)
    assert differ.verdict == "depends on rounding"
    assert "written-out: supported" in differ.reason and "autograd: inconclusive" in differ.reason
    one = _row(book, claim, src, s, {"written-out": wide}, quick=False)
    assert one.verdict == "inconclusive" and one.by_kernel == {}


# -- the packaged claims file ------------------------------------------------------------------------------------------


def test_packaged_claims_load_and_every_experiment_validates_in_both_modes():
    book = load_claims()
    assert len({c.id for c in book.claims}) == len(book.claims) >= 15
    for quick in (False, True):
        exps = check_references(book, book.claims, quick)  # configs load, where/over name grid keys and values
        assert set(exps) == {s.experiment for c in book.claims for s in c.settings}
    assert all(c.reason for c in book.claims if c.status == "not measured yet")
    for c in book.claims:
        assert c.source in book.sources
    assert "claims" not in packaged_configs()  # the claims file is not an experiment
    assert {"morvan_tf23_revised", "morvan_tftutorial", "digits_mlp", "lr_range", "batch_size_mlp"} <= set(
        packaged_configs()
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b["claims"][0].update(source="nobody"), "unknown source 'nobody'"),
        (lambda b: b["claims"][0]["settings"][0].update(experiment="nothing"), "unknown experiment 'nothing'"),
        (lambda b: b["claims"][0]["settings"][0]["where"].update({"model.norm": "layer"}), "is not in the grid"),
        (lambda b: b["claims"][0]["settings"][0]["where"].update({"model.depth": 3}), "is not a grid key"),
        (lambda b: b["claims"][0]["settings"][0]["where"].pop("model.activation"), "runs per seed"),
        (lambda b: b["claims"][0]["settings"][0]["criterion"].pop("at_least"), "threshold needs"),
        (lambda b: b["experiments"]["morvan_tf23"].update(set=["train.lr=-1"]), "train.lr"),
        (  # the TensorFlow-Tutorial edition without BN: the PyTorch edition's runs, but for BN's momentum and eps
            lambda b: b["claims"][0]["settings"].append(
                {**b["claims"][0]["settings"][2], "setting": "again", "experiment": "morvan_tftutorial"}
            ),
            "and 'again' measure the same runs",
        ),
        (lambda b: b["figures"].append({"file": "x.png", "experiment": "nothing", "figure": "cost"}), "figure x.png"),
        (lambda b: b["figures"].append({"file": "x.gif", "experiment": "morvan_tf23", "figure": "cost"}), "file"),
        (
            lambda b: b["figures"].append(
                {"file": "x.png", "experiment": "morvan_tf23", "figure": "cost", "compare": "lr"}
            ),
            "figure x.png: 'lr' is not a grid key of morvan_tf23",
        ),
        (
            lambda b: b["figures"].append(
                {"file": "x.png", "experiment": "morvan_tf23", "figure": "cost", "where": {"model.norm": "layer"}}
            ),
            "figure x.png: where norm=layer matches no run of morvan_tf23",
        ),
    ],
)
def test_bad_claims_files_are_one_line_and_exit_2(tmp_path, edit, message):
    from normbench.claims import claims_path

    book = yaml.safe_load(claims_path().read_text())
    edit(book)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(book, allow_unicode=True))
    with pytest.raises(ConfigError, match=message):
        b = load_claims(path)
        check_references(b, b.claims, quick=False)
    result = runner.invoke(app, ["claims", "--claims", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing trained or written


def test_a_claim_not_measured_yet_gets_its_row_and_reason_and_trains_nothing(tmp_path):
    from normbench.claims import claims_path

    book = yaml.safe_load(claims_path().read_text())
    reason = "normbench has no such layer"
    book["claims"].append(
        {"id": "some-claim", "claim": "A claim.", "source": "dl_tricks", "status": "not measured yet", "reason": reason}
    )
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(book, allow_unicode=True))
    result = runner.invoke(app, ["claims", "--claims", str(path), "--only", "some-claim", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    [row] = json.loads((tmp_path / "o" / "claims.json").read_text())["claims"]
    assert row["verdict"] == "not measured yet" and reason in row["reason"]
    assert not [p for p in (tmp_path / "o").iterdir() if p.is_dir()]  # no experiment trained


def test_unknown_claim_id_and_out_as_a_file_exit_2(tmp_path):
    result = runner.invoke(app, ["claims", "--only", "no-such-claim", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no such claim" in result.output
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["claims", "--only", "bn-regularizes", "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output


# -- end to end ------------------------------------------------------------------------------------------------------


def test_one_quick_claim_end_to_end(tmp_path):
    from normbench.claims import claims_path

    # The packaged claims with a figure of this claim's experiment, and one of another experiment (not drawn).
    book = yaml.safe_load(claims_path().read_text())
    book["figures"] = [
        {"file": "tanh.png", "experiment": "tanh_init", "figure": "units_name-normal"},
        {"file": "other.png", "experiment": "lr_range", "figure": "final_vs_lr"},
    ]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(book, allow_unicode=True))
    out = tmp_path / "results"
    args = ["claims", "--quick", "--only", "large-weights-saturate-tanh", "--out", str(out), "--claims", str(path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "claims.json").read_text())
    assert doc["mode"] == "quick" and [r["claim_id"] for r in doc["claims"]] == ["large-weights-saturate-tanh"] * 2
    normal, xavier = doc["claims"]
    # N(0, 1) weights saturate tanh at initialization in every seed; Xavier's do not.
    assert normal["verdict"] == "supported" and min(normal["values"]["weight_init.name=normal"]) > 0.5
    assert xavier["verdict"] == "supported" and max(xavier["values"]["weight_init.name=xavier"]) < 0.1
    md = (out / "claims.md").read_text()
    assert "large-weights-saturate-tanh" in md and "| **supported** |" in md
    assert "large-weights-saturate-tanh" in result.output and "supported" in result.output
    # Run again: every run is reused, and the verdicts are the same.
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 to train" in again.output
    assert [r["verdict"] for r in json.loads((out / "claims.json").read_text())["claims"]] == ["supported"] * 2
    # The figure is the one `normbench plot` draws, byte for byte; only the checked experiment's is drawn.
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["tanh.png"]
    assert runner.invoke(app, ["plot", str(out / "tanh_init")]).exit_code == 0
    plotted = out / "tanh_init" / "figures" / "units_name-normal.png"
    assert (out / "figures" / "tanh.png").read_bytes() == plotted.read_bytes()
    # The folder's report shows the claims' verdicts on its runs, as the check gave them.
    assert runner.invoke(app, ["report", str(out / "tanh_init")]).exit_code == 0
    page = (out / "tanh_init" / "report.html").read_text()
    assert "Verdicts on the articles" in page and page.count("large-weights-saturate-tanh") == 2
    # A figure name the experiment does not have: one line naming the ones it has, exit 2.
    book["figures"][0]["figure"] = "nothing"
    path.write_text(yaml.safe_dump(book, allow_unicode=True))
    bad = runner.invoke(app, args)
    lines = [line for line in bad.output.splitlines() if line.startswith("error")]
    assert bad.exit_code == 2 and len(lines) == 1 and "no figure 'nothing'" in lines[0] and "cost" in lines[0]


def test_column_mean_leaves_out_layer_1_and_unmeasured_rows():
    from normbench.claims import Measure
    from normbench.claims.measures import _column_mean

    layers = pd.DataFrame(
        {"step": [0, 0, 0, 50, 50, 50], "layer": [1, 2, 3, 1, 2, 3], "ics_cos": [1.0, 0.5, np.nan, 1.0, -0.5, 0.25]}
    )
    m = Measure(quantity="column_mean", column="ics_cos")
    assert _column_mean(m, layers) == pytest.approx((0.5 - 0.5 + 0.25) / 3)


def test_mode_ratio_final_value_and_landscape_from_their_tables():
    from normbench.claims import Measure
    from normbench.claims.measures import _final_value, _landscape, _mode_ratio

    curves = pd.DataFrame(
        {
            "step": [0, 0, 10, 10, 10, 10],
            "split": ["train"] * 5 + ["test"],
            "mode": ["train", "eval", "train", "eval", "precise", "eval"],
            "loss": [9.0, 9.0, 2.0, 5.0, 2.5, 7.0],
            "accuracy": [NAN] * 6,
        }
    )
    assert _mode_ratio(Measure(quantity="mode_ratio", mode="eval", versus="precise"), curves) == pytest.approx(
        math.log10(5.0 / 2.5)
    )
    assert math.isnan(_mode_ratio(Measure(quantity="mode_ratio", split="test", mode="eval"), curves))  # no precise
    assert _final_value(Measure(quantity="final_value", mode="eval"), curves) == 5.0
    assert _final_value(Measure(quantity="final_value", split="test", mode="eval"), curves) == 7.0
    diverged = curves.assign(loss=curves.loss.where(curves.step == 0, np.nan))
    assert _final_value(Measure(quantity="final_value", mode="eval"), diverged) == INF
    landscape = pd.DataFrame(
        {
            "step": [0, 0, 5, 5],
            "scale": [0.0, 1.0, 0.0, 1.0],
            "distance": [0.0, 0.5, 0.0, 0.25],
            "loss": [1.0, 3.0, 2.0, 2.5],
            "grad_change": [0.0, 2.0, 0.0, 1.0],
        }
    )
    assert _landscape(Measure(quantity="landscape", column="loss_range"), landscape) == pytest.approx((2.0 + 0.5) / 2)
    assert _landscape(Measure(quantity="landscape", column="beta"), landscape) == pytest.approx((4.0 + 4.0) / 2)
    with pytest.raises(ValueError, match="landscape needs column"):
        Measure(quantity="landscape", column="ics_cos")


def test_a_figure_the_quick_variant_lacks_is_left_out_with_a_note(tmp_path, tiny_raw):
    """final_vs_lr needs 3 learning rates; with 2 (as a quick variant may have) the figure is not there: a note in
    quick mode, an error in full mode (or for an experiment without a quick variant)."""
    import io
    import shutil

    from rich.console import Console

    from normbench.claims import ClaimsBook, draw_figures
    from normbench.config import experiment_from_dict
    from normbench.sweep import run_experiment

    tiny_raw |= {"name": "tiny-quick", "seeds": [1], "grid": {"train.lr": [0.001, 0.002]}}
    run_experiment(experiment_from_dict(tiny_raw), tmp_path, console=Console(file=io.StringIO()))
    shutil.copytree(tmp_path / "tiny-quick", tmp_path / "tiny")
    raw = {
        "sources": {"s": {"title": "t", "author": "a"}},
        "experiments": {"tiny": {"config": "x", "quick": ["seeds=[1]"]}},
        "claims": [{"id": "c", "claim": "c", "source": "s", "status": "not measured yet", "reason": "r"}],
        "figures": [{"file": "f.png", "experiment": "tiny", "figure": "final_vs_lr"}],
    }
    book = ClaimsBook.model_validate(raw)
    said = io.StringIO()
    assert draw_figures(book, tmp_path, True, {"tiny"}, Console(file=said, width=300)) == []
    assert "f.png: not drawn in quick mode (tiny-quick gives no final_vs_lr)" in said.getvalue()
    with pytest.raises(ConfigError, match=r"figure f\.png: tiny has no figure 'final_vs_lr'"):
        draw_figures(book, tmp_path, False, {"tiny"}, Console(file=io.StringIO()))
    raw["figures"][0]["figure"] = "cost"
    [path] = draw_figures(ClaimsBook.model_validate(raw), tmp_path, True, {"tiny"}, Console(file=io.StringIO()))
    assert path == tmp_path / "figures" / "f.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_update_puts_the_checked_claims_rows_into_an_earlier_claims_json(tmp_path):
    """--update: the checked claims' old rows go, the new ones take their place in the claims file's order, the
    others stay as they were; seconds add up and each partial check is listed; another mode is refused."""
    from dataclasses import asdict

    from normbench.claims import Row
    from normbench.claims.output import update_claims_file

    book = load_claims()
    first, second, third = (c.id for c in book.claims[:3])

    def row(claim_id: str, verdict: str) -> Row:
        return Row(claim_id, "c", "s", None, "a setting", "e", "m", "k", "x", verdict, "why")

    path = tmp_path / "claims.json"
    old = [row(first, "supported"), row(second, "inconclusive"), row("gone-from-the-file", "supported")]
    doc = {"mode": "full", "kernel": "both", "seconds": 100.0, "claims": [asdict(r) for r in old]}
    path.write_text(json.dumps(doc))
    new = [row(third, "not supported"), row(second, "supported"), row(second, "supported")]
    update_claims_file(path, new, book, [second, third], quick=False, seconds=20.0, kernel="both")
    got = json.loads(path.read_text())
    assert [(r["claim_id"], r["verdict"]) for r in got["claims"]] == [
        (first, "supported"),
        (second, "supported"),
        (second, "supported"),
        (third, "not supported"),
    ]
    assert got["seconds"] == 120.0 and got["updates"][0]["claims"] == [second, third]
    with pytest.raises(ConfigError, match="one table mixes no two"):
        update_claims_file(path, new, book, [second], quick=True, seconds=1.0, kernel="both")
    result = runner.invoke(app, ["claims", "--update", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--only" in result.output
