"""Reading what someone else wrote (configs, results folders, data files) with bounded work, and quoting it.

    raw = load_yaml(text)          # yaml.safe_load, refusing documents too large or alias bombs (YAMLLimit)
    f"got {short(value)}"          # at most 60 characters of a user's value in a message

YAML anchors and aliases let a few hundred bytes stand for a billion values (an "alias bomb"): PyYAML shares
the aliased objects, but everything that walks the result (validation, copies, messages) sees them all. The
document is composed first (its nodes, each alias one reference), the number of nodes it stands for with every
alias expanded is counted (linear in the composed nodes, each node's count computed once), and a document above
MAX_YAML_NODES is refused before any Python object is built.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_BYTES = 1_000_000  # a config of a thousand lines is 30 KB
MAX_YAML_NODES = 100_000  # scalars, lists and mappings, aliases expanded; the packaged configs have under 300
MAX_YAML_CHARS = 10_000_000  # characters of all scalars, aliases expanded
MAX_YAML_DEPTH = 100  # nested lists and mappings


class YAMLLimit(yaml.YAMLError, ValueError):
    """A YAML document that stands for more than normbench reads."""


def esc(value: Any) -> str:
    """A value as literal text inside rich markup: `[old]` and `a[/]b` print as written."""
    from rich.markup import escape

    return escape(str(value))


def short(value: Any, limit: int = 60) -> str:
    """repr-free text of a value for an error message: at most `limit` characters, then '…'."""
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters ('…' after): a user's value quoted in a message."""
    if isinstance(value, str | bytes | int | float | bool | None):
        text = repr(value if not isinstance(value, str | bytes) else value[: limit + 1])
    else:
        text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[:limit] + "…"


def _bounded_repr(value: Any, limit: int) -> str:
    """repr of nested lists/dicts that stops after `limit` characters, however large (or shared) the value is."""
    parts: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size < limit:
        v = stack.pop()
        if isinstance(v, _Raw):
            s = v.text
        elif isinstance(v, list | tuple | dict):
            items = list(v.items() if isinstance(v, dict) else v)[:limit]
            tokens: list[Any] = []
            for i, item in enumerate(items):
                if i:
                    tokens.append(_Raw(", "))
                if isinstance(v, dict):
                    tokens += [_Raw(repr(item[0])[:limit] + ": "), item[1]]
                else:
                    tokens.append(item)
            tokens.append(_Raw("}" if isinstance(v, dict) else "]"))
            stack.extend(reversed(tokens))
            s = "{" if isinstance(v, dict) else "["
        else:
            s = repr(v)[:limit] if isinstance(v, str | bytes | int | float | bool | None) else type(v).__name__
        parts.append(s)
        size += len(s)
    return "".join(parts)


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def load_yaml(text: str | bytes) -> Any:
    """yaml.safe_load with limits: MAX_YAML_BYTES of text, MAX_YAML_NODES nodes with aliases expanded, and
    MAX_YAML_DEPTH of nesting. Raises yaml.YAMLError (YAMLLimit for a limit), one line of message."""
    if len(text) > MAX_YAML_BYTES:
        raise YAMLLimit(f"{len(text)} bytes, more than the {MAX_YAML_BYTES} a config may have")
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLLimit(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
        if node is None:
            return None
        count_nodes(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def count_nodes(root: yaml.Node) -> int:
    """The nodes `root` stands for with every alias expanded; YAMLLimit past MAX_YAML_NODES, MAX_YAML_CHARS (the
    scalars' characters), MAX_YAML_DEPTH or on
    a recursive alias. Each distinct node is counted once and its count reused, so a bomb costs its own size."""
    total: dict[int, int] = {}
    chars: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            n = 1 + sum(total[id(c)] for c in _children(node))
            c = len(node.value) if isinstance(node, yaml.ScalarNode) else sum(chars[id(c)] for c in _children(node))
            if c > MAX_YAML_CHARS:
                raise YAMLLimit(
                    f"the document stands for more than {MAX_YAML_CHARS} characters once its aliases (*name) are "
                    "expanded (an alias bomb?)"
                )
            chars[key] = c
            if n > MAX_YAML_NODES:
                raise YAMLLimit(
                    f"the document stands for more than {MAX_YAML_NODES} values once its aliases (*name) are "
                    "expanded (an alias bomb?)"
                )
            total[key] = n
            continue
        if key in total:
            continue
        if key in on_path:
            raise YAMLLimit("an alias (*name) refers to a list or mapping that contains it")
        if depth > MAX_YAML_DEPTH:
            raise YAMLLimit(f"nested more than {MAX_YAML_DEPTH} levels deep")
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in total:
                stack.append((child, depth + 1, False))
    return total[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
