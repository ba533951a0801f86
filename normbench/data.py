"""Datasets, chosen by name. Each builder returns whole tensors: these data sets fit in memory many times over.

data = build_dataset(cfg.data)      # Dataset(x_train (N, F), y_train (N, T), x_test, y_test, task)
for xb, yb in batches(data, batch_size=10, shuffle=True, generator=g): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from normbench.registry import Registry

if TYPE_CHECKING:
    from normbench.config import DataConfig


@dataclass
class Dataset:
    x_train: torch.Tensor  # (N, F) float32
    y_train: torch.Tensor  # (N, T) float32 for regression
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    task: str  # 'regression'

    @property
    def in_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def out_features(self) -> int:
        return self.y_train.shape[1]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "train":
            return self.x_train, self.y_train
        if self.x_test is None or self.y_test is None:
            raise ValueError("this data set has no test split (set data.n_test > 0)")
        return self.x_test, self.y_test


DATASETS: Registry[Callable[[DataConfig], Dataset]] = Registry("dataset")


@DATASETS.register("quadratic")
def quadratic(cfg: DataConfig) -> Dataset:
    """y = x^2 - 5 + Normal(0, noise) on x = linspace(x_min, x_max, n): the seed's noisy parabola."""

    # numpy's legacy RandomState so that seed 1 draws the very noise of the seed's `np.random.seed(1)` script.
    rng = np.random.RandomState(cfg.seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.linspace(cfg.x_min, cfg.x_max, n)[:, None]  # (n, 1)
        y = np.square(x) - 5 + rng.normal(0.0, cfg.noise, x.shape)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    x_train, y_train = make(cfg.n)
    x_test, y_test = make(cfg.n_test) if cfg.n_test > 0 else (None, None)
    return Dataset(x_train, y_train, x_test, y_test, task="regression")


def build_dataset(cfg: DataConfig) -> Dataset:
    return DATASETS.get(cfg.name)(cfg)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int | None, shuffle: bool, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless mini-batches, epoch after epoch; batch_size None is the full batch. The last partial batch of an
    epoch is kept (as a DataLoader with drop_last=False does)."""
    n = x.shape[0]
    size = n if batch_size is None else min(batch_size, n)
    if size == n and not shuffle:  # the seed's setting: the same full batch every step, no copies
        while True:
            yield x, y
    while True:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, size):
            idx = order[start : start + size]
            yield x[idx], y[idx]
