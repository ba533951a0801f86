"""A grid value as text, in every place a user reads one: the one module that formats them (no torch, no pandas).

    value_text([0.5, 1.25])                                  -> '[0.5, 1.25]'     (as the user wrote it)
    setting("model.norm", "batch")                           -> 'norm=batch'      (a run's line, a figure's label)
    settings(["model.norm", "seed"], ("batch", 1))           -> 'norm=batch, seed=1'
    group_title(["model.activation"], ("relu",))             -> 'model.activation = relu' (the report's groups)
    group_slug(["model.activation"], ("relu",))              -> 'activation-relu' (a figure's file name; 'all')
    where_folder(["norm=batch", "lr=0.1"])                   -> 'where-norm=batch,lr=0.1' (a --where's folder)
    filter_text({"model.weight_init.std": 0.1})              -> 'weight_init.std=0.1' (a claim's selection)
    run_folder_names(rows, ["model.norm", "seed"])           -> {run_id: 'norm=batch,seed=1'} (export's folders)

The last two keep the forms their outputs have always had: a claim's selection names a key without its first
part (`weight_init.std`) and shows the value as written in the claims file; export's folder names show a value as
Python prints it. Every other text shows a key by its last part and a value through value_text.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def plain(v: Any) -> Any:
    """A grid value, or any result, as plain Python and JSON (results.jsonable is this): numpy scalars and arrays
    (parquet's lists) as numbers and lists, NaN/inf as None."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if getattr(v, "ndim", 0) > 0:  # a numpy array (a list read back from parquet)
        return plain(v.tolist())
    if hasattr(v, "item"):  # numpy / torch scalars
        return plain(v.item())
    return v


def value_text(v: Any) -> str:
    """A grid value as the user wrote it: a list value as [1.0, 3.0], numbers plain."""
    return str(plain(list(v))) if hasattr(v, "__len__") and not isinstance(v, str) else str(plain(v))


def key_text(key: str) -> str:
    """A dotted grid key by its last part: 'model.weight_init.std' -> 'std'."""
    return key.split(".")[-1]


def setting(key: str, value: Any, *, show: Callable[[str], str] = str) -> str:
    """'norm=batch': the key's last part and the value (value_text, then `show`: e.g. escaped for a figure)."""
    return f"{key_text(key)}={show(value_text(value))}"


def settings(keys: Iterable[str], values: Any, *, sep: str = ", ", show: Callable[[str], str] = str) -> str:
    """Several settings, `values` a tuple (or one value for one key): 'norm=batch, activation=relu'."""
    values = values if isinstance(values, tuple) else (values,)
    return sep.join(setting(k, v, show=show) for k, v in zip(keys, values, strict=True))


def group_title(keys: list[str], values: tuple) -> str:
    """A group of runs in the HTML report: 'model.activation = relu' (every key in full)."""
    return ", ".join(f"{k} = {value_text(v)}" for k, v in zip(keys, values, strict=True))


def group_slug(keys: list[str], values: Any) -> str:
    """A figure group's part of a file name: ('model.activation',), ('relu',) -> 'activation-relu'; 'all'."""
    values = values if isinstance(values, tuple) else (values,)
    parts = [f"{key_text(k)}-{_slug_value(v)}" for k, v in zip(keys, values, strict=True)]
    slug = "_".join(parts) or "all"
    if len(slug) > 120:  # a file name has at most 255 bytes: a long value is cut, its hash keeps names apart
        slug = slug[:100] + "-" + hashlib.sha256(slug.encode()).hexdigest()[:10]
    return slug


def _slug_value(v: Any) -> str:
    """A grid value in a file name: a list value as its items joined by ',' ((0.5, 1.25) -> '0.5,1.25'), characters
    other than letters, digits and ._,=+- as '_'."""
    text = ",".join(str(plain(x)) for x in v) if isinstance(v, list | tuple) else str(v)
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)


def where_folder(where: list[str]) -> str:
    """The figure folder of a selection: `--where norm=batch --where lr=0.1` -> 'where-norm=batch,lr=0.1'."""
    return "where-" + ",".join(re.sub(r"[^A-Za-z0-9_.=+-]", "_", w) for w in where)


def filter_text(flt: Mapping[str, Any] | None) -> str:
    """A claim's selection: {'model.norm': 'batch', 'model.weight_init.std': 0.1} -> 'norm=batch, weight_init.std=0.1'
    (each key without its first part, each value as the claims file wrote it)."""
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in (flt or {}).items())


def run_folder_names(rows: list[dict[str, Any]], axes: list[str]) -> dict[str, str]:
    """run_id -> folder name: the run's grid values (`norm=batch,seed=1`; dotted keys in full where their last
    parts clash), safe as a file name; the run id where there is no grid or the name would be too long for a file
    name, and appended where names clash."""
    short = [key_text(a) for a in axes]
    names = short if len(set(short)) == len(short) else axes
    labels = {}
    for row in rows:
        text = ",".join(f"{n}={row[a]}" for n, a in zip(names, axes, strict=True)) or row["run_id"]
        labels[row["run_id"]] = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text) if len(text) <= 200 else row["run_id"]
    counts = Counter(labels.values())
    return {rid: (f"{lab}_{rid}" if counts[lab] > 1 and lab != rid else lab) for rid, lab in labels.items()}
