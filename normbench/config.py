"""Experiment configs: YAML -> typed, validated objects -> a grid of runs.

    exp = load_experiment("configs/morvan_tf23.yaml", overrides=["train.lr=0.01"])
    for run in exp.runs:        # the Cartesian product of exp.config.grid (and seeds)
        run.run_id, run.params, run.config   # '3f2a9c1b7e40', {'model.norm': 'batch', ...}, RunConfig

Everything is checked here, once: unknown keys, wrong types, unknown names (with the valid choices), bad
ranges, bad grid keys. Every problem becomes a ConfigError with a one-line message naming the dotted field.

A grid axis is a list of values, or one of `logspace(START, STOP, COUNT)`, `linspace(START, STOP, COUNT)`,
`range([START,] STOP[, STEP])` (numpy's and Python's meanings), and the grid key `zip` (or `zip_<label>`) holds
settings that vary together: a list of mappings, one per point, crossed with the other axes.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from normbench.errors import UserError
from normbench.registry import (
    ACTIVATIONS,
    DATASETS,
    INITS,
    MODELS,
    NORMS,
    OPTIMIZERS,
    SEQUENCE_NORMS,
    Registry,
    UnknownName,
)
from normbench.safe import MAX_YAML_BYTES, YAMLLimit, load_yaml, quoted, short

PACKAGED_CONFIGS = [Path(__file__).parent / "configs", Path(__file__).parent.parent / "configs"]


class ConfigError(UserError):
    """A mistake in a config or an override; the message is one line, meant for the user."""


def _grid_base(info: ValidationInfo) -> bool:
    """True while validating an experiment's base config under a grid: checks that relate several fields are
    left to the runs, since a grid key may change any of those fields (the base's batch_size 'full' with
    lr_batch is fine when every run sets a number)."""
    return bool(info.context and info.context.get("grid_base"))


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number (int or float, maybe in a union or Annotated) and not a bool."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _numeric(args[0])
    if args:  # a union, a tuple or a list of ...
        return bool not in args and any(_numeric(a) for a in args)
    return annotation in (int, float)


MAX_INT = 2**53  # larger whole numbers are no setting's value: float64 and parquet's int64 hold them exactly


class Strict(BaseModel):
    # inf and NaN are not numbers a config means (lr: .inf would make every run diverge at step 1)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        """YAML's true/false are not numbers: `lr: true` would otherwise train with lr 1.0."""
        if isinstance(v, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {str(v).lower()}")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
            raise ValueError(f"{quoted(v, 20)} is larger than any setting can use (at most 2**53)")
        return v


def _name_in(registry: Registry[Any]):
    """A field validator that accepts any spelling of a registered name and stores the canonical one."""

    def check(cls, v: str) -> str:
        return registry.canonical(v)

    return check


PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Range = tuple[float, float]


class DataConfig(Strict):
    name: str = "quadratic"
    n: int | None = Field(None, gt=0, description="training samples (quadratic: 500; images: cap, default all)")
    n_test: int | None = Field(None, ge=0, description="test samples (quadratic: 0 = none; images: cap)")
    x_min: float = -7.0  # quadratic only
    x_max: float = 10.0
    noise: float = Field(8.0, ge=0, description="quadratic: std of the Normal noise added to y")
    seed: int = Field(1, description="seed of the data itself; the run's `seed` varies init and batch order")
    shuffle: bool = Field(False, description="present the training samples in a new order every epoch")
    path: str | None = Field(None, description="folder of the files of mnist, fashion_mnist, cifar10")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="digits: share held out for the test split")
    preprocess: Literal["none", "zscore", "pca", "zca"] = "none"
    permuted: bool = Field(False, description="sequential_digits: the pixels in a fixed random order")
    permutation_seed: int = Field(0, description="sequential_digits: the seed of that order")
    seq_length: tuple[PositiveInt, PositiveInt] = Field(
        (10, 20), description="adding: [shortest, longest] training sequence, drawn per sequence"
    )
    test_length: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="adding: [shortest, longest] test sequence (null: seq_length)"
    )
    pairs: tuple[PositiveInt, PositiveInt] = Field((2, 4), description="recall: [fewest, most] key-value pairs")
    vocab: int = Field(8, ge=2, le=1000, description="recall: distinct keys, and values (the classes)")

    _name = field_validator("name")(_name_in(DATASETS))

    @field_validator("seq_length", "test_length", "pairs")
    @classmethod
    def _ordered_pair(cls, v: tuple[int, int] | None, info: ValidationInfo) -> tuple[int, int] | None:
        if v is not None and not v[0] <= v[1] <= 10_000:
            raise ValueError(f"[shortest, longest] with shortest <= longest <= 10000, got [{v[0]}, {v[1]}]")
        if v is not None and info.field_name != "pairs" and v[0] < 2:
            raise ValueError(f"adding sequences need two steps at least, got [{v[0]}, {v[1]}]")
        return v

    @model_validator(mode="after")
    def _range(self) -> DataConfig:
        if not self.x_min < self.x_max:
            raise ValueError(f"x_min ({self.x_min}) must be below x_max ({self.x_max})")
        return self


class InitConfig(Strict):
    name: str = "normal"
    std: PositiveFloat = 1.0  # normal only
    gain: PositiveFloat = 1.0  # xavier only

    _name = field_validator("name")(_name_in(INITS))

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v  # `weight_init: xavier`


class ModelConfig(Strict):
    name: str = "mlp"
    depth: int = Field(7, gt=0, description="hidden layers")
    width: int = Field(30, gt=0, description="units per hidden layer")
    activation: str = "relu"
    norm: str = "none"
    norm_eps: PositiveFloat = 1e-5
    norm_momentum: float = Field(0.1, ge=0, le=1, description="PyTorch convention: weight of the new batch")
    norm_affine: bool = True
    normalize_input: bool = Field(False, description="apply the norm to the input x too (layer 0)")
    placement: Literal["before", "after", "pre", "post"] = Field(
        "before",
        description="mlp, cnn: norm before or after the activation; transformer: pre (each residual branch starts "
        "with its norm) or post (a norm after each residual sum); a transformer's default is pre",
    )
    weight_init: InitConfig = InitConfig()
    bias_init: float = 0.0
    bias: Literal["auto"] | bool = Field(
        "auto",
        description="bias of linear/conv layers; auto: none where a norm directly follows (Ioffe & Szegedy 2015)",
    )
    norm_groups: int = Field(2, gt=0, description="group norm: channel groups per layer")
    norm_noise: tuple[float, float] = Field(
        (0.5, 1.25),
        description="noisy_batch norm: [m, s]; every step each channel's noise has a mean shift U(-m, m) and a mean "
        "scale U(1, s) (Santurkar et al.'s 0.5 and 1.25)",
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout probability after each hidden block (eval mode passes values through)"
    )
    channels: list[Annotated[int, Field(gt=0)]] = Field([16, 32], min_length=1, description="cnn: channels per block")
    kernel: int = Field(3, gt=0, description="cnn: odd convolution kernel size")
    pool: Literal["max", "avg", "none"] = Field("max", description="cnn: 2x2 pooling after each block")
    norm_paths: Literal["both", "input", "sum"] = Field(
        "both",
        description="rnn, lstm: the norm on the input-to-hidden and hidden-to-hidden paths separately (Cooijmans et "
        "al.; the lstm's cell too), on the input-to-hidden path only (Laurent et al.), or (rnn) on their sum "
        "(Ba et al.)",
    )
    bn_gamma: PositiveFloat = Field(
        0.1, description="rnn, lstm: initial gamma of batch and batch_step norms (Cooijmans et al.'s 0.1)"
    )
    norm_mask: bool = Field(
        True,
        description="rnn, lstm, transformer: padded positions stay out of batch statistics; false lets them in as "
        "zeros (only to show what that costs; batch and batch_step norms only)",
    )
    heads: int = Field(2, gt=0, description="transformer: attention heads (they divide model.width)")
    attention: Literal["padding", "causal"] = Field(
        "padding", description="transformer: attend to every real step, or (causal) to the real steps up to one's own"
    )

    _name = field_validator("name")(_name_in(MODELS))

    @model_validator(mode="before")
    @classmethod
    def _transformer_placement(cls, v: Any) -> Any:
        if isinstance(v, dict) and str(v.get("name", "")).lower() == "transformer" and "placement" not in v:
            return v | {"placement": "pre"}
        return v

    @field_validator("norm_noise", mode="before")
    @classmethod
    def _two_numbers(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise ValueError(f"[shift m, scale s]: two numbers, got {quoted(v)}")
        return v

    @field_validator("norm_noise")
    @classmethod
    def _noise(cls, v: tuple[float, float]) -> tuple[float, float]:
        m, s = v
        if m < 0 or s < 1:
            raise ValueError(f"[shift m, scale s] with m >= 0 and s >= 1, got [{m:g}, {s:g}]")
        return v

    _activation = field_validator("activation")(_name_in(ACTIVATIONS))

    @field_validator("norm")
    @classmethod
    def _norm(cls, v: str, info: ValidationInfo) -> str:
        return (SEQUENCE_NORMS if info.data.get("name") in SEQUENCE_MODELS else NORMS).canonical(v)

    def norm_class(self) -> Any:
        """The class of model.norm, from the registry of this model's norms."""
        return (SEQUENCE_NORMS if self.name in SEQUENCE_MODELS else NORMS).get(self.norm)

    @model_validator(mode="after")
    def _fits(self, info: ValidationInfo) -> ModelConfig:
        if _grid_base(info):
            return self
        if self.name in SEQUENCE_MODELS:
            self._fits_sequences()
            return self
        if not self.norm_mask:
            raise ValueError(f"norm_mask is for the sequence models (rnn, lstm, transformer), not the {self.name}")
        if self.placement in ("pre", "post"):
            raise ValueError(f"placement {self.placement} is the transformer's; the {self.name} takes before or after")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (got {self.kernel}) so that 'same' padding keeps the size")
        if self.name == "mlp" and self.norm == "instance":
            raise ValueError(
                "instance norm normalizes each channel over H, W, which MLP features do not have (every value would "
                "become 0): use model.name cnn, or norm layer/group"
            )
        if self.norm == "group":
            widths = [self.width] if self.name == "mlp" else self.channels
            bad = [w for w in widths if w % self.norm_groups]
            if bad:
                raise ValueError(f"norm_groups {self.norm_groups} does not divide the layer width(s) {bad}")
        return self

    def _fits_sequences(self) -> None:
        recurrent = self.name in ("rnn", "lstm")
        if self.normalize_input:
            raise ValueError(f"model.normalize_input: the {self.name} model has no input norm")
        if self.dropout:
            raise ValueError(f"model.dropout: the {self.name} model has no dropout")
        if recurrent and self.placement != "before":
            raise ValueError(f"placement {self.placement}: the {self.name} model places its norms by norm_paths")
        if self.name == "transformer" and self.placement not in ("pre", "post"):
            raise ValueError(f"placement {self.placement}: the transformer takes pre or post")
        if self.name == "lstm" and self.norm_paths == "sum":
            raise ValueError(
                "norm_paths sum is the rnn's (Ba et al.'s norm of the summed inputs); the lstm takes both or input"
            )
        if self.name == "lstm" and self.activation != "tanh":
            raise ValueError(f"activation {self.activation}: the lstm's activation is tanh (model.activation tanh)")
        if recurrent and getattr(self.norm_class(), "whole_sequence", False) and self.norm_paths != "input":
            raise ValueError(
                "norm batch shares its statistics over time, so it needs the whole sequence at once: a recurrence can "
                "have it on the input-to-hidden path only (norm_paths input, as Laurent et al.), or use batch_step"
            )
        if not self.norm_mask and not getattr(self.norm_class(), "batch_statistics", False):
            raise ValueError(f"norm_mask false changes batch statistics only; norm {self.norm} has none")
        if self.name == "transformer" and self.norm == "batch_step":
            raise ValueError("norm batch_step is for recurrences; the transformer takes none, batch, layer or rms")
        if self.name == "transformer" and self.width % self.heads:
            raise ValueError(f"model.heads {self.heads} does not divide model.width {self.width}")


class TrainConfig(Strict):
    optimizer: str = "sgd"
    lr: PositiveFloat = 0.001
    lr_batch: int | None = Field(
        None,
        gt=0,
        description="linear scaling rule: lr is for batches of this size; the run uses lr * batch / lr_batch",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum and nesterov only")
    betas: tuple[float, float] = (0.9, 0.999)  # adam only
    weight_decay: float = Field(0.0, ge=0)
    steps: int | None = Field(None, gt=0, description="parameter updates (default 251 unless epochs is given)")
    epochs: int | None = Field(None, gt=0, description="passes over the training set, instead of steps")
    batch_size: Literal["full"] | Annotated[int, Field(gt=0)] = "full"
    warmup: int = Field(0, ge=0, description="steps of linear learning-rate warm-up: update t uses lr * t / warmup")

    _optimizer = field_validator("optimizer")(_name_in(OPTIMIZERS))

    @model_validator(mode="after")
    def _length(self, info: ValidationInfo) -> TrainConfig:
        if _grid_base(info):
            return self
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give train.steps or train.epochs, not both")
        if self.steps is None and self.epochs is None:
            self.steps = 251
        if self.lr_batch is not None and self.batch_size == "full":
            raise ValueError("train.lr_batch scales lr with the batch size; it needs a numeric batch_size")
        return self

    def minibatch(self) -> int | None:
        """The samples of a step, as data.batches takes them: None for the full batch."""
        return None if self.batch_size == "full" else self.batch_size

    def effective_lr(self) -> float:
        if self.lr_batch is None:
            return self.lr
        return self.lr * int(self.batch_size) / self.lr_batch


RangeOrAuto = Range | Literal["auto"]


class Ranges(Strict):
    """Histogram bin ranges per recorded point: a fixed [low, high], or `auto`, a range chosen for each histogram
    from its own values (record.auto_ranges has the rule). Values outside a range are counted, not dropped."""

    input: RangeOrAuto = "auto"  # every point of layer 0, the (normalized) input
    pre_norm: RangeOrAuto = "auto"
    post_norm: RangeOrAuto = "auto"
    post_act: RangeOrAuto = "auto"
    grad_pre_norm: RangeOrAuto = "auto"  # d(loss)/d(pre_norm)
    grad_weight: RangeOrAuto = "auto"  # d(loss)/d(the layer's weight)

    @field_validator("*", mode="before")
    @classmethod
    def _auto_or_pair(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            raise ValueError(f"expected auto or [low, high], got {quoted(v)}")
        return v

    @field_validator("*")
    @classmethod
    def _ordered(cls, v: RangeOrAuto) -> RangeOrAuto:
        if v != "auto" and not v[0] < v[1]:
            raise ValueError(f"range low ({v[0]}) must be below high ({v[1]})")
        return v


class RecordConfig(Strict):
    loss_every: int = Field(5, gt=0, description="steps between loss records")
    hist_every: int = Field(50, gt=0, description="steps between histograms and layer statistics")
    bins: int = Field(30, gt=0, le=1000)
    ranges: Ranges = Ranges()
    eval_split: Literal["train", "test"] = Field("train", description="the samples histograms are taken on")
    eval_mode: Literal["train", "eval"] = Field(
        "train", description="norms use batch statistics (train) or running statistics (eval) for histograms"
    )
    saturation_threshold: float = Field(0.99, gt=0, lt=1)
    ics_every: int | None = Field(
        None, gt=0, description="steps between internal covariate shift measurements (Santurkar et al. 2018); null: off"
    )
    landscape_every: int | None = Field(
        None,
        gt=0,
        description="steps between loss-landscape measurements along the gradient (Santurkar et al.); null: off",
    )
    landscape_scales: list[PositiveFloat] = Field(
        [0.5, 1.0, 2.0, 4.0],
        min_length=1,
        description="landscape: steps along -gradient of these multiples of the run's lr (sgd: of its own step)",
    )

    running_stats: bool = Field(
        False, description="how far BN's running statistics are from the training set's, at each histogram step"
    )
    precise_bn: bool = Field(
        False, description="after training, the losses with running statistics recomputed on the training set"
    )
    time: bool = Field(
        True,
        description="sequence models: per time step statistics at each histogram step (time.parquet); no effect on "
        "the mlp and cnn",
    )

    @field_validator("landscape_scales")
    @classmethod
    def _distinct(cls, v: list[float]) -> list[float]:
        if len(set(v)) < len(v):
            raise ValueError(f"each scale once, got {v}")
        return sorted(v)


# Options added after results existed, each with the test of when it is off: an option that is off is left out of
# the run id, so that adding it did not make every earlier run train again. An option in use is always in the id,
# whatever its value, so changing a default later cannot give a stale result a new meaning.
LATER_OPTIONS: dict[tuple[str, str], Callable[[dict[str, Any]], bool]] = {
    ("record", "ics_every"): lambda d: d["record"]["ics_every"] is None,
    ("record", "landscape_every"): lambda d: d["record"]["landscape_every"] is None,
    ("record", "landscape_scales"): lambda d: d["record"]["landscape_every"] is None,
    ("record", "running_stats"): lambda d: not d["record"]["running_stats"],
    ("record", "precise_bn"): lambda d: not d["record"]["precise_bn"],
    ("record", "time"): lambda d: d["model"]["name"] not in SEQUENCE_MODELS or not d["record"]["time"],
    ("model", "norm_noise"): lambda d: (
        d["model"]["name"] in SEQUENCE_MODELS or not getattr(NORMS.get(d["model"]["norm"]), "noisy", False)
    ),
    ("model", "dropout"): lambda d: d["model"]["dropout"] == 0,
    ("train", "warmup"): lambda d: d["train"]["warmup"] == 0,
    ("data", "permuted"): lambda d: d["data"]["name"] != "sequential_digits",
    ("data", "permutation_seed"): lambda d: d["data"]["name"] != "sequential_digits",
    ("data", "seq_length"): lambda d: d["data"]["name"] != "adding",
    ("data", "test_length"): lambda d: d["data"]["name"] != "adding",
    ("data", "pairs"): lambda d: d["data"]["name"] != "recall",
    ("data", "vocab"): lambda d: d["data"]["name"] != "recall",
    ("model", "norm_paths"): lambda d: d["model"]["name"] not in ("rnn", "lstm"),
    ("model", "bn_gamma"): lambda d: d["model"]["name"] not in ("rnn", "lstm"),
    ("model", "heads"): lambda d: d["model"]["name"] != "transformer",
    ("model", "norm_mask"): lambda d: d["model"]["norm_mask"],
    ("model", "attention"): lambda d: d["model"]["name"] != "transformer",
}

# The models that read sequences (nn/sequence_models.py), their norms from SEQUENCE_NORMS, and their data sets.
SEQUENCE_MODELS = ("rnn", "lstm", "transformer")
SEQUENCE_DATA = ("sequential_digits", "adding", "recall")


# A norm's own options, which change nothing in a run without a norm.
NORM_OPTIONS = ("norm_eps", "norm_momentum", "norm_affine", "norm_groups", "norm_noise")


class RunConfig(Strict):
    """Everything one training run depends on. Its hash is the run id."""

    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    record: RecordConfig = RecordConfig()

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> RunConfig:
        if _grid_base(info):
            return self
        if self.record.eval_split == "test" and self.data.name == "quadratic" and not self.data.n_test:
            raise ValueError("record.eval_split is 'test' but data.n_test is 0 (no test split)")
        if self.model.name == "cnn" and self.data.name == "quadratic":
            raise ValueError(
                "model cnn needs images, but data quadratic gives single numbers: use model.name mlp, or image data "
                "(digits, mnist, fashion_mnist, cifar10)"
            )
        if self.data.preprocess == "pca" and self.model.name == "cnn":
            raise ValueError("data.preprocess pca gives flat vectors, not images: use zca with a cnn")
        sequences, seq_data = self.model.name in SEQUENCE_MODELS, self.data.name in SEQUENCE_DATA
        if sequences != seq_data:
            raise ValueError(
                f"model {self.model.name} and data {self.data.name} do not fit: the rnn, lstm and transformer read "
                f"sequences ({', '.join(SEQUENCE_DATA)}); the mlp and cnn read the others"
            )
        if self.train.batch_size == 1 and getattr(self.model.norm_class(), "batch_statistics", False):
            raise ValueError(
                f"train.batch_size 1 with {self.model.norm} norm: batch statistics of a single sample are undefined "
                "(use a batch of 2 or more, or a per-sample norm such as layer or group)"
            )
        return self

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: the resolved config without the later options that are off (LATER_OPTIONS)."""
        dumped = self.model_dump(mode="json")
        off = [(section, key) for (section, key), is_off in LATER_OPTIONS.items() if is_off(dumped)]
        for section, key in off:
            del dumped[section][key]
        return dumped

    def run_id(self) -> str:
        return _hash(self.identity())

    def computation(self) -> str:
        """A hash of what the run computes and records: its identity without the options that have no effect in it
        (a norm's options when it has no norm). Runs of two configs that differ only there (BN's momentum, in a
        run without BN) give the same tables: they are one piece of evidence, not two."""
        d = self.identity()
        if d["model"]["norm"] == "none":
            for key in NORM_OPTIONS:
                d["model"].pop(key, None)
        return _hash(d)


def _hash(d: dict[str, Any]) -> str:
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# The most values one grid axis (or `seeds`) may have, and the default cap on the runs of a grid (the product of
# its axes), both checked before any run is made; --max-runs (load_experiment's max_runs) raises the cap.
MAX_AXIS_VALUES = 10_000
MAX_RUNS = 10_000

# Grid values written as an expression instead of a list (see expand_values).
_HELPER = re.compile(r"^\s*(logspace|linspace|range)\s*\((.*)\)\s*$", re.DOTALL)
# A grid key holding zipped settings: `zip`, or `zip_<label>` when several groups vary independently.
_ZIP = re.compile(r"^zip(_[A-Za-z0-9_]+)?$")


def is_zip_key(key: str) -> bool:
    return bool(_ZIP.match(key))


def grid_keys(grid: Any) -> list[str]:
    """Every dotted key a grid sets, the keys inside `zip` groups included, in order. Tolerant of a grid not yet
    validated (what is not a mapping is skipped), so it also serves to read back a results folder's config."""
    keys: list[str] = []
    if not isinstance(grid, dict):
        return keys
    for key, values in grid.items():
        if is_zip_key(str(key)) and isinstance(values, list):
            group: list[str] = []  # every entry names the same keys
            for entry in values:
                group += [str(k) for k in (entry if isinstance(entry, dict) else {}) if str(k) not in group]
            keys += group
        else:
            keys.append(str(key))
    return keys


def _round(x: float) -> float:
    """A computed grid value to 12 significant digits: logspace and linspace carry float64 rounding of a few ulp
    (linspace(0.1, 1, 10) has 0.30000000000000004, and pow may differ by an ulp between platforms and numpy
    versions), which would otherwise change run ids and print as noise in labels; 12 digits keep far more than
    any experiment needs while leaving a margin of about 4 digits to float64's 15.9, so one expression gives
    the same values, and the same run ids, everywhere, and 0.01 from a logspace is the 0.01 a list would give."""
    return float(f"{x:.12g}")


def expand_values(text: str, where: str) -> list[Any]:
    """`logspace(-4, 0, 13)` -> 13 values from 1e-4 to 1 (numpy.logspace), `linspace(0.1, 1, 10)`
    (numpy.linspace), `range(1, 6)` -> [1, 2, 3, 4, 5] (Python's range, integers). No eval: the arguments must be
    plain numbers. `where` names the axis in the error message."""
    import numpy as np

    match = _HELPER.match(text)
    if not match:
        raise ValueError(
            f"{where}: expected a list of values or logspace(START, STOP, COUNT), linspace(START, STOP, COUNT), "
            f"range([START,] STOP[, STEP]); got {quoted(text)}"
        )
    fn, body = match.groups()
    args = [a.strip() for a in body.split(",")] if body.strip() else []
    numbers = []
    for a in args:
        try:
            x = float(a)
        except ValueError:
            raise ValueError(f"{where}: {fn}(...): {quoted(a)} is not a number") from None
        if not np.isfinite(x):
            raise ValueError(f"{where}: {fn}(...): {quoted(a)} is not a finite number")
        numbers.append(x)
    if fn == "range":
        if not 1 <= len(numbers) <= 3:
            raise ValueError(f"{where}: range takes 1 to 3 integers ([START,] STOP[, STEP]), got {len(numbers)}")
        if any(x != int(x) or not re.fullmatch(r"[+-]?\d+", a) for x, a in zip(numbers, args, strict=True)):
            raise ValueError(f"{where}: range takes integers, got {quoted(text.strip())} (use linspace for fractions)")
        ints = [int(x) for x in numbers]
        if len(ints) == 3 and ints[2] == 0:
            raise ValueError(f"{where}: range step must not be zero")
        span = range(*ints)
        if len(span) > MAX_AXIS_VALUES:  # counted without making the list
            raise ValueError(
                f"{where}: {quoted(text.strip())} has {len(span)} values, more than the {MAX_AXIS_VALUES} a grid axis "
                "may have"
            )
        values: list[Any] = list(span)
        if not values:
            raise ValueError(f"{where}: {text.strip()} has no values")
        return values
    if len(numbers) != 3:
        raise ValueError(
            f"{where}: {fn} takes 3 numbers (START, STOP, COUNT), got {len(numbers)} in {quoted(text.strip())}"
        )
    start, stop, count = numbers
    if count != int(count) or count < 1:
        raise ValueError(f"{where}: {fn} COUNT must be a whole number of at least 1, got {args[2]}")
    if count > MAX_AXIS_VALUES:
        raise ValueError(
            f"{where}: {fn} COUNT {count:.0f} is more values than the {MAX_AXIS_VALUES} a grid axis may have"
        )
    make = np.logspace if fn == "logspace" else np.linspace
    with np.errstate(over="ignore"):
        values = [_round(float(x)) for x in make(start, stop, int(count))]
    if fn == "logspace" and not all(np.isfinite(values)):
        raise ValueError(f"{where}: {text.strip()} overflows float64")
    return values


class ExperimentConfig(RunConfig):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="the results folder's name: ASCII letters, digits and _.- (no path separators, no leading dot)",
    )
    description: str = ""
    seeds: list[int] | None = Field(
        None, min_length=1, max_length=MAX_AXIS_VALUES, description="shorthand for a grid axis `seed`"
    )
    grid: dict[str, list[Any]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, raw: Any) -> Any:
        """Axis values written as logspace(...), linspace(...) or range(...) become their lists."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        if isinstance(raw.get("seeds"), str):
            raw["seeds"] = expand_values(raw["seeds"], "seeds")
        if isinstance(raw.get("grid"), dict):
            raw["grid"] = {
                k: expand_values(v, f"grid.{short(k)}") if isinstance(v, str) and not is_zip_key(str(k)) else v
                for k, v in raw["grid"].items()
            }
        return raw

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if grid is None:
            return None
        if not grid:
            raise ValueError("grid is empty: give at least one dotted key with a list of values, or remove it")
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {quoted(key)} has an empty list of values")
            if len(values) > MAX_AXIS_VALUES:
                raise ValueError(f"grid key {quoted(key)} has {len(values)} values, more than {MAX_AXIS_VALUES}")
            if is_zip_key(key):
                _check_zip(key, values)
                keys = list(values[0])
            else:
                keys = [key]
            for k in keys:
                if k in ("name", "description", "seeds", "grid") or k.startswith("grid.") or is_zip_key(k):
                    raise ValueError(f"grid key {quoted(k)} cannot vary")
        keys = grid_keys(grid)
        for i, a in enumerate(keys):
            for b in keys[:i]:
                if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                    same = (
                        f"{quoted(a)} is given twice" if a == b else f"{quoted(b)} and {quoted(a)} set the same field"
                    )
                    raise ValueError(f"{same} (a key may be one axis or in one zip group, not several)")
        return grid

    @model_validator(mode="after")
    def _seed_axis(self) -> ExperimentConfig:
        if self.seeds is not None and "seed" in grid_keys(self.grid):
            raise ValueError(
                "give seeds either as `seeds:` or as grid key `seed`, not both (--set 'seeds=[1,2]' changes `seeds:`)"
            )
        return self

    def axis_groups(self) -> list[tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
        """The grid's axes as (keys, points): one key for a plain axis, several for a zip group; the runs are the
        Cartesian product of the groups' points. `seeds` is the last axis, `seed`."""
        groups: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
        for key, values in (self.grid or {}).items():
            if is_zip_key(key):
                keys = tuple(values[0])
                groups.append((keys, [tuple(entry[k] for k in keys) for entry in values]))
            else:
                groups.append(((key,), [(v,) for v in values]))
        if self.seeds is not None:
            groups.append((("seed",), [(s,) for s in self.seeds]))
        return groups

    def axes(self) -> dict[str, list[Any]]:
        """Every varying key -> its values in grid order (a zipped key's values are its zip group's, in order)."""
        return {k: [p[i] for p in points] for keys, points in self.axis_groups() for i, k in enumerate(keys)}

    def shape(self) -> str:
        """`model.norm (2) x zip(train.batch_size, train.lr) (3) x seed (2)`, or 'no grid'."""
        parts = [
            f"{keys[0]} ({len(points)})" if len(keys) == 1 else f"zip({', '.join(keys)}) ({len(points)})"
            for keys, points in self.axis_groups()
        ]
        return " x ".join(parts) or "no grid"


def _check_zip(key: str, entries: list[Any]) -> None:
    """A zip group: a list of mappings with the same dotted keys, one mapping per point."""
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not entry:
            raise ValueError(
                f"{key} entry {i}: expected a mapping of dotted keys to values, e.g. "
                "{train.batch_size: 2, train.lr: 0.01}, got " + quoted(entry)
            )
        if set(entry) != set(entries[0]):
            missing = sorted(set(entries[0]) - set(entry))
            extra = sorted(set(entry) - set(entries[0]))
            what = "; ".join(
                [f"lacks {', '.join(missing)}"] * bool(missing) + [f"has {', '.join(extra)} in addition"] * bool(extra)
            )
            raise ValueError(f"{key} entry {i} {what}: every entry must set the same keys as entry 1")


@dataclass(frozen=True)
class Run:
    run_id: str
    params: dict[str, Any]  # the grid's dotted keys -> this run's (canonical) values
    config: RunConfig


@dataclass(frozen=True)
class Experiment:
    config: ExperimentConfig
    runs: list[Run]
    source: str  # where the config came from

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def axes(self) -> list[str]:
        """Every varying dotted key, zipped keys included (the columns of runs.parquet after run_id)."""
        return list(self.config.axes())


# ---------------------------------------------------------------------------------------------------------------
# Loading


def resolve_config_path(path: str | Path) -> Path:
    """A file path, or the name of a packaged config (`morvan_tf23` or `morvan_tf23.yaml`)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.exists():
        raise ConfigError(f"{p}: is not a file")
    if len(p.parts) == 1:
        for folder in PACKAGED_CONFIGS:
            for candidate in (folder / p.name, folder / f"{p.name}.yaml"):
                if candidate.is_file():
                    return candidate
    raise ConfigError(f"config file not found: {p} (packaged configs: {', '.join(packaged_configs()) or 'none'})")


def packaged_configs() -> list[str]:
    for folder in PACKAGED_CONFIGS:
        if folder.is_dir():  # claims.yaml beside them is `normbench claims`'s list, not an experiment
            return sorted(f.stem for f in folder.glob("*.yaml") if f.name != "claims.yaml")
    return []


def load_experiment(path: str | Path, overrides: list[str] = (), max_runs: int | None = None) -> Experiment:
    """The experiment of a config file (or packaged config name) with --set overrides; `max_runs` caps its grid
    (default MAX_RUNS)."""
    p = resolve_config_path(path)
    raw = read_config_yaml(p)
    if raw is None:
        raise ConfigError(f"{p}: the file is empty; a config is a mapping of sections (name, data, model, ...)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (name, data, model, ...), got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    for item in overrides:
        _check_not_shadowed(raw, item)
    return experiment_from_dict(raw, source=str(p), max_runs=max_runs)


def read_config_yaml(p: Path) -> Any:
    """The YAML document of file `p`, within the limits of normbench.safe; every problem is one ConfigError line."""
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise YAMLLimit(f"larger than the {MAX_YAML_BYTES} bytes a config may have")
        return load_yaml(data.decode("utf-8"))
    except YAMLLimit as e:
        raise ConfigError(f"{p}: refused: {e}") from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        tag = f" {short(e.problem.split('tag', 1)[-1].strip())}" if e.problem and "tag" in e.problem else ""
        raise ConfigError(f"{p}: YAML tag{tag} not allowed{where} (a config holds plain values only)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: YAML syntax error{where}: {short(problem)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {short(e.strerror or e, 120)}") from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`model.norm=batch` or `grid.model.norm=[none, batch]`: the value is read as YAML; `grid.KEY=null` removes
    that axis."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {quoted(item)}: expected KEY=VALUE, e.g. --set train.lr=0.01")
    try:
        value = load_yaml(text)
    except YAMLLimit as e:
        raise ConfigError(f"--set {quoted(item)}: refused: {e}") from None
    except yaml.YAMLError:
        raise ConfigError(f"--set {quoted(item)}: the value is not valid YAML") from None
    if key.startswith("grid."):  # grid keys themselves contain dots
        grid = raw.get("grid") or {}
        raw["grid"] = grid
        if value is None:  # grid.KEY=null: that key no longer varies
            grid.pop(key[len("grid.") :], None)
            if not grid:
                raw["grid"] = None
        else:
            grid[key[len("grid.") :]] = value
        return
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {quoted(item)}: {quoted(part)} is not a section")
        node = child
    node[parts[-1]] = value


def _check_not_shadowed(raw: dict[str, Any], item: str) -> None:
    """`--set model.norm=batch` while the grid varies model.norm would be silently overwritten by every run."""
    key, _, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if key.startswith("grid.") or key in ("seeds", "name", "description", "grid"):
        return
    grid = raw.get("grid")
    axes = grid_keys(grid)
    if raw.get("seeds") is not None:
        axes.append("seed")
    for axis in axes:
        if key != axis and not key.startswith(axis + "."):
            continue
        value = short(text) if key == axis else "..."
        if axis == "seed" and raw.get("seeds") is not None:
            where, hint = f"seeds: {_flow(raw['seeds'])}", f"--set 'seeds=[{value}]'"
        elif isinstance(grid, dict) and axis in grid:
            where, hint = f"grid.{axis}: {_flow(grid[axis])}", f"--set 'grid.{axis}=[{value}]'"
        else:
            zkey = next(k for k, v in grid.items() if is_zip_key(str(k)) and axis in grid_keys({k: v}))
            where, hint = f"in grid.{zkey}", f"--set 'grid.{zkey}=[...]' with the values you want"
        raise ConfigError(
            f"--set {quoted(item)}: {axis} is a grid axis ({where}), so every run sets its own value and this one "
            f"would be ignored; use {hint}"
        )


def _flow(values: Any) -> str:
    """[none, batch] as YAML's flow style writes it, not Python's ['none', 'batch']."""
    text = "[" + ", ".join(str(v) for v in values[:20]) + "]" if isinstance(values, list) else str(values)
    return short(text)


def experiment_from_dict(raw: dict[str, Any], source: str = "<dict>", max_runs: int | None = None) -> Experiment:
    """The validated experiment and its runs; a grid of more than `max_runs` runs (default MAX_RUNS) is refused
    before any run is made."""
    try:
        cfg = ExperimentConfig.model_validate(raw, context={"grid_base": bool(raw.get("grid") or raw.get("seeds"))})
    except ValidationError as e:
        raise ConfigError(f"{source}: {describe(e, ExperimentConfig)}") from None
    base = cfg.model_dump(mode="json", exclude={"name", "description", "seeds", "grid"})
    groups = cfg.axis_groups()
    limit = MAX_RUNS if max_runs is None else max_runs
    count = math.prod(len(points) for _, points in groups)
    if count > limit:
        raise ConfigError(
            f"{source}: the grid has {count} runs ({cfg.shape()}), more than the limit of {limit}; "
            "raise it with --max-runs N if you mean it"
        )
    axes = [k for keys, _ in groups for k in keys]
    runs: list[Run] = []
    seen: set[str] = set()
    for points in itertools.product(*(pts for _, pts in groups)):
        values = [v for point in points for v in point]
        d = copy.deepcopy(base)
        for key, value in zip(axes, values, strict=True):
            _set_dotted(d, key, value, source)
        try:
            run_cfg = RunConfig.model_validate(d)
        except ValidationError as e:
            point = ", ".join(f"{k}={quoted(v)}" for k, v in zip(axes, values, strict=True))
            raise ConfigError(f"{source}: grid point ({point}): {describe(e, RunConfig)}") from None
        run = Run(run_cfg.run_id(), {k: _get_dotted(run_cfg, k) for k in axes}, run_cfg)
        if run.run_id in seen:
            raise ConfigError(
                f"{source}: grid has duplicate runs (e.g. {quoted(run.params, 120)}); remove repeated values"
            )
        seen.add(run.run_id)
        runs.append(run)
    return Experiment(cfg, runs, source)


def _set_dotted(d: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node: Any = d
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{source}: grid.{key}: unknown config key {quoted(where)}")
        if i == len(parts) - 1:
            node[part] = value
        node = node[part]


def _get_dotted(cfg: BaseModel, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node.model_dump(mode="json") if isinstance(node, BaseModel) else node


def describe(e: ValidationError, model: type[BaseModel]) -> str:
    """One line naming each dotted field and what is wrong with it."""
    parts = []
    for err in e.errors():
        loc = short(".".join(str(x) for x in err["loc"]), 120)
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, err["loc"][:-1])
            msg = "unknown key" + (f" (valid keys: {', '.join(valid)})" if valid else "")
        elif err["type"] == "missing":
            msg = "required"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            msg = f"{msg} (got {quoted(err['input'])})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


__all__ = [
    "ConfigError",
    "Experiment",
    "ExperimentConfig",
    "Run",
    "RunConfig",
    "UnknownName",
    "load_experiment",
]
