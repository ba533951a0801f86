"""The sequence models (nn/sequence_models.py): shapes; padding against the same sequences run one by one, or, for
the batch norms, against a brute-force recurrence written here with F.batch_norm on the real rows; per-step batch
norm beyond the training length; the sequence data sets; each packaged sequence config through `normbench run`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from normbench.cli import app
from normbench.config import ConfigError, ModelConfig, RunConfig, experiment_from_dict, load_experiment
from normbench.data import build_dataset, pack_sequences, unpack_sequences
from normbench.nn.models import build_model

TOL = dict(rtol=1e-9, atol=1e-9)  # float64 against float64: rounding only
N, T, C, OUT = 4, 6, 3, 5
LENGTHS = [6, 4, 2, 5]


def batch(features: int = C, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded float64 batch x (N, T, features + 1), padding filled with large values before packing."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(N, T, features, generator=g, dtype=torch.float64)
    mask = torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]
    x = pack_sequences(values, mask)
    x[..., :-1] = torch.where(mask[..., None], x[..., :-1], 1e6)  # the model must never look at padding
    return x, mask


def model(name: str, norm: str, features: int = C, steps: int = T, **options) -> torch.nn.Module:
    cfg = ModelConfig(
        name=name,
        norm=norm,
        depth=2,
        width=8,
        heads=2,
        activation="tanh" if name != "transformer" else "relu",
        weight_init={"name": "xavier"},
        **options,
    )
    torch.manual_seed(0)
    return build_model(cfg, (steps, features + 1), OUT).double()


CASES = [
    ("rnn", "none", {}),
    ("rnn", "layer", {}),
    ("rnn", "rms", {}),
    ("rnn", "layer", {"norm_paths": "sum"}),
    ("rnn", "batch_step", {}),
    ("rnn", "batch", {"norm_paths": "input"}),
    ("lstm", "none", {}),
    ("lstm", "layer", {}),
    ("lstm", "batch_step", {}),
    ("lstm", "batch", {"norm_paths": "input"}),
    ("transformer", "layer", {"placement": "pre"}),
    ("transformer", "rms", {"placement": "post"}),
    ("transformer", "batch", {"placement": "pre", "attention": "causal"}),
    ("transformer", "none", {"placement": "post", "attention": "causal"}),
]


@pytest.mark.parametrize(("name", "norm", "options"), CASES)
def test_shapes_and_finite_outputs(name, norm, options):
    m = model(name, norm, **options)
    x, _ = batch()
    for mode in (True, False):
        out = m.train(mode)(x)
        assert out.shape == (N, OUT) and torch.isfinite(out).all()


PER_SEQUENCE = [c for c in CASES if "batch" not in c[1]]


@pytest.mark.parametrize(("name", "norm", "options"), PER_SEQUENCE)
def test_a_padded_batch_equals_each_sequence_alone(name, norm, options):
    """Without batch statistics a sequence's output depends on its real steps only."""
    m = model(name, norm, **options)
    x, _ = batch()
    together = m(x)
    values, _ = unpack_sequences(x)
    for n, length in enumerate(LENGTHS):
        alone = pack_sequences(values[n : n + 1, :length], torch.ones(1, length, dtype=torch.bool))
        torch.testing.assert_close(m(alone)[0], together[n], **TOL)


def reference_rnn(m, x: torch.Tensor, mask: torch.Tensor, norm: str) -> torch.Tensor:
    """The Elman RNN of `m`'s parameters, written out: batch norm on the real rows only, by F.batch_norm (per step for
    batch_step; over the real positions of every sequence concatenated for batch, input path only)."""
    values = unpack_sequences(x)[0]
    h_in = values
    for i in (1, 2):
        layer = getattr(m, f"layer{i}")
        wx = h_in @ layer.fc.weight.T  # (N, T, H)
        width = wx.shape[-1]
        if norm == "batch":
            rows = F.batch_norm(wx[mask], None, None, layer.norm.weight, layer.norm.bias, training=True, eps=1e-5)
            wx = wx.masked_scatter(mask[..., None], rows)
        h = torch.zeros(len(x), width, dtype=x.dtype)
        out = torch.zeros(len(x), mask.shape[1], width, dtype=x.dtype)
        for t in range(mask.shape[1]):
            real = mask[:, t]
            a_x, a_h = wx[real, t], h[real] @ layer.rec.weight.T
            if norm == "batch_step":
                a_x = F.batch_norm(a_x, None, None, layer.norm.weight, layer.norm.bias, training=True, eps=1e-5)
                a_h = F.batch_norm(a_h, None, None, layer.norm_h.weight, layer.norm_h.bias, training=True, eps=1e-5)
            h = h.clone()
            h[real] = torch.tanh(a_x + a_h + layer.b)
            out[:, t] = h
        h_in = out
    last = mask.sum(1) - 1
    return m.head(h_in[torch.arange(len(x)), last])


@pytest.mark.parametrize(("norm", "paths"), [("batch_step", "both"), ("batch", "input")])
def test_batch_norms_of_a_padded_batch_against_the_brute_force_recurrence(norm, paths):
    # steps 0-1 have 4 real rows, 2-3 three, 4 two, 5 one: F.batch_norm needs two, so test the first 5 steps
    m = model("rnn", norm, norm_paths=paths)
    x, mask = batch()
    x, mask = x[:, :5], mask[:, :5]
    torch.testing.assert_close(m(x), reference_rnn(m, x, mask, norm), **TOL)


def test_per_step_batch_norm_beyond_the_training_length_uses_the_last_steps_statistics():
    """A model trained on T steps, evaluated on 2T: the same outputs as a model of 2T steps whose running
    statistics for the steps from T on are those of step T - 1."""
    short = model("lstm", "batch_step")
    x, _ = batch()
    short(x)  # one training forward: running statistics for steps 0..T-1
    short.eval()
    long_x, _ = batch(seed=1)
    long_x = torch.cat([long_x, batch(seed=2)[0]], 1)
    long_x[..., -1] = 1.0  # every step real
    long = model("lstm", "batch_step", steps=2 * T).eval()
    state = short.state_dict()
    for key, value in state.items():
        if key.endswith("_t"):  # (T, C) -> (2T, C): step T - 1 repeated
            state[key] = torch.cat([value, value[-1:].expand(T, -1)])
    long.load_state_dict(state)
    torch.testing.assert_close(short(long_x), long(long_x), **TOL)
    changed = long.layer1.norm.running_mean_t.clone()
    changed[T:] += 1.0
    long.layer1.norm.running_mean_t.copy_(changed)
    assert not torch.allclose(short(long_x), long(long_x))  # the steps beyond do read those statistics


def test_sequence_data_sets():
    digits = build_dataset(RunConfig.model_validate(seq_cfg("sequential_digits")).data)
    assert digits.x_train.shape[1:] == (64, 2) and (digits.x_train[..., -1] == 1).all()
    permuted = build_dataset(RunConfig.model_validate(seq_cfg("sequential_digits", permuted=True)).data)
    assert torch.equal(permuted.x_train[..., 0].sort(1).values, digits.x_train[..., 0].sort(1).values)
    assert not torch.equal(permuted.x_train, digits.x_train)
    adding = build_dataset(RunConfig.model_validate(seq_cfg("adding", seq_length=[5, 9], test_length=[20, 25])).data)
    values, mask = unpack_sequences(adding.x_train)
    lengths = mask.sum(1)
    assert lengths.min() >= 5 and lengths.max() == 9 and adding.x_train.shape[1] == 9
    assert (mask[:, :-1].int() >= mask[:, 1:].int()).all()  # padding after the real steps
    assert (values[..., 1].sum(1) == 2).all()
    torch.testing.assert_close((values[..., 0] * values[..., 1]).sum(1), adding.y_train[:, 0])
    assert unpack_sequences(adding.x_test)[1].sum(1).min() >= 20
    recall = build_dataset(RunConfig.model_validate(seq_cfg("recall", pairs=[2, 3], vocab=4)).data)
    tokens = unpack_sequences(recall.x_train)[0].argmax(-1)  # (N, T) token ids
    for seq, answer, length in zip(tokens, recall.y_train, unpack_sequences(recall.x_train)[1].sum(1), strict=True):
        seq = seq[:length].tolist()
        assert seq[-2] == 8  # the query marker, then the key
        assert seq[seq.index(seq[-1]) + 1] == 4 + answer


def seq_cfg(name: str, **data) -> dict:
    model_name = "transformer" if name == "recall" else "rnn"
    return {"data": {"name": name, "n": 40, "n_test": 20, **data}, "model": {"name": model_name, "norm": "layer"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"name": "rnn", "norm": "batch"}}, "norm_paths input"),
        ({"model": {"name": "lstm", "norm": "layer", "norm_paths": "sum"}}, "rnn's"),
        ({"model": {"name": "transformer", "norm": "batch_step"}}, "transformer takes"),
        ({"model": {"name": "rnn", "norm": "group"}}, "unknown sequence norm"),
        ({"model": {"name": "mlp", "norm": "batch_step"}}, "unknown norm"),
        ({"model": {"name": "transformer", "placement": "before"}}, "pre or post"),
        ({"model": {"name": "mlp"}}, "do not fit"),
    ],
)
def test_config_mistakes_are_one_line(change, message):
    raw = {"name": "x", "data": {"name": "adding"}} | change
    with pytest.raises(ConfigError, match=message) as info:
        experiment_from_dict(raw)
    assert "\n" not in str(info.value)


def test_transformer_placement_defaults_to_pre_and_old_run_ids_stay():
    assert ModelConfig(name="transformer").placement == "pre"
    # the new keys are off for the mlp: its run ids are those of before the sequence models
    assert "norm_paths" not in RunConfig().identity()["model"]
    assert "warmup" not in RunConfig().identity()["train"]


SMALL = {
    "seq_rnn_norms": ["data.n=40", "data.n_test=20", "train.epochs=1", "train.batch_size=20", "seeds=[1]"],
    "seq_lstm_adding": [
        "data.n=40",
        "data.n_test=10",
        "data.seq_length=[4, 6]",
        "data.test_length=[8, 9]",
        "train.epochs=1",
        "train.batch_size=20",
        "seeds=[1]",
    ],
    "seq_transformer": ["data.n=40", "data.n_test=10", "train.epochs=1", "train.batch_size=20", "seeds=[1]"],
}


@pytest.mark.parametrize("name", list(SMALL))
def test_each_packaged_sequence_config_runs_records_and_summarizes(tmp_path, name):
    exp = load_experiment(name, SMALL[name])
    runner = CliRunner()
    args = ["run", name, "--out", str(tmp_path)]
    for s in SMALL[name]:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / name
    records = json.loads(runner.invoke(app, ["summary", str(folder), "--format", "json"]).stdout)
    assert len(records) == len(exp.runs) and all(r["status"] == "ok" for r in records)
    layers = pd.concat(pd.read_parquet(p) for p in folder.glob("runs/*/layers.parquet"))
    depth = exp.runs[0].config.model.depth
    assert set(layers["layer"]) == set(range(1, depth + 1))  # hidden layers' unit statistics
    hists = pd.concat(pd.read_parquet(p) for p in folder.glob("runs/*/histograms.parquet"))
    assert set(hists["layer"]) == set(range(depth + 1))
    assert {"pre_norm", "post_norm", "post_act", "grad_pre_norm", "grad_weight"} <= set(hists["point"])
