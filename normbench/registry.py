"""Name -> thing registries for every swappable piece (norms, sequence norms, activations, inits, optimizers,
datasets, models).

The registries themselves live here, below everything that uses them; each names the module that fills it
(its provider), imported the first time a name is looked up. So the config schema can check names against the
registries without importing the models or the trainer, and no module imports in a circle.

    # normbench/nn/norms.py, the provider of NORMS:
    @NORMS.register("batch", aliases=("bn", "batchnorm"))
    class BatchNorm(...): ...

    NORMS.get("Batch_Norm")   # -> BatchNorm ('batch_norm' == 'batchnorm' == 'BatchNorm')
    NORMS.get("bacth")        # UnknownName: unknown norm 'bacth'; choose from: batch, none

Adding a norm is one class and one `register` line; every test that loops over a registry then covers it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from normbench.errors import UserError
from normbench.safe import quoted

T = TypeVar("T")


class UnknownName(UserError):
    """A name that is not in a registry. The message lists the valid names (unlike a bare KeyError)."""


def _key(name: str) -> str:
    # 'Batch_Norm', 'batch-norm' and 'batchnorm' are the same name.
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


class Registry(Generic[T]):
    def __init__(self, kind: str, *providers: str):
        self.kind = kind
        self.providers = providers  # the modules whose import registers the items
        self._loaded = not providers
        self._items: dict[str, T] = {}  # canonical name -> item, in registration order
        self._lookup: dict[str, str] = {}  # normalized name or alias -> canonical name
        self._help: dict[str, str] = {}
        self._aliases: dict[str, tuple[str, ...]] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), help: str = "") -> Callable[[T], T]:
        def add(item: T) -> T:
            for key in (name, *aliases):
                if _key(key) in self._lookup:
                    raise ValueError(f"{self.kind} name {key!r} is registered twice")
                self._lookup[_key(key)] = name
            self._items[name] = item
            self._aliases[name] = tuple(aliases)
            # the docstring's first paragraph, whole (its first line may end mid-sentence)
            doc = help or " ".join(inspect.cleandoc(getattr(item, "__doc__", None) or "").split("\n\n")[0].split())
            self._help[name] = doc
            return item

        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for provider in self.providers:
                importlib.import_module(provider)

    def canonical(self, name: str) -> str:
        """The registered spelling of `name`, or UnknownName listing the choices."""
        self._load()
        try:
            return self._lookup[_key(str(name))]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {quoted(name)}; choose from: {', '.join(self.names())}") from None

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        self._load()
        return list(self._items)

    def help(self, name: str) -> str:
        return self._help[self.canonical(name)]

    def aliases(self, name: str) -> tuple[str, ...]:
        """The other names `name` is registered under (any spelling of them works too: case, '_', '-')."""
        return self._aliases[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and _key(name) in self._lookup

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


# Every registry of the project, with the module that fills it.
NORMS: Registry[Any] = Registry("norm", "normbench.nn.norms")
SEQUENCE_NORMS: Registry[Any] = Registry("sequence norm", "normbench.nn.sequence_norms")  # rnn, lstm, transformer
ACTIVATIONS: Registry[Any] = Registry("activation", "normbench.nn.activations")
INITS: Registry[Any] = Registry("init", "normbench.nn.models")
MODELS: Registry[Any] = Registry("model", "normbench.nn.models", "normbench.nn.sequence_models")
DATASETS: Registry[Any] = Registry("dataset", "normbench.data")
OPTIMIZERS: Registry[Any] = Registry("optimizer", "normbench.engine.optim")
