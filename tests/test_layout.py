"""The layout docs/architecture.md describes: every module named there, imports in one direction only, and the
light modules light (checking a config brings no kernel, reading results no torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "normbench"
VIEWS = PACKAGE / "views"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules `path` imports, anywhere in it (inside functions and under TYPE_CHECKING too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known}
    return out


def test_architecture_and_the_readme_layout_name_every_module():
    skip = {"__init__.py", "__main__.py"}
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name not in skip and p.name not in text]
    assert not missing, f"docs/architecture.md does not name {missing}"
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("```\nnormbench/\n") :].split("```\n", 2)[1]
    named = {line.split()[0] for line in layout.splitlines()[1:] if line.startswith("  ") and line.split()}
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name not in skip}
    missing = sorted(m for m in modules if m not in named and m.split("/")[0] + "/" not in named)
    assert not missing, f"README's code layout does not name {missing}"


def test_no_module_imports_in_a_circle():
    """Not even for type checking, nor inside a function: the package's root is a facade that imports its
    modules on first use, and none of them imports it (the version is normbench.version's)."""
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                circles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for name in sorted(graph):
        visit(name, [name])
    assert not circles, "\n".join(circles)


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def test_checking_a_config_loads_no_kernel_and_reading_results_no_torch():
    loaded = loaded_after("from normbench.config import load_experiment\nload_experiment('morvan_tf23')")
    assert not {m for m in loaded if m.startswith("normbench.engine.") and m != "normbench.engine.optim"}, loaded
    loaded = loaded_after(
        "import normbench.api, normbench.results, normbench.store, normbench.views.summary, normbench.views.render"
    )
    assert "torch" not in loaded
    assert "torch" not in loaded_after("import normbench.views.html, normbench.finals, normbench.views.export")
    assert "torch" not in loaded_after("import normbench.labels")


# Exceptions that never reach a user as such: each is turned into a UserError where it is caught, or is Ctrl-C.
INTERNAL_EXCEPTIONS = {
    "ForbiddenGlobal": "data.py turns it into a DataError naming the file",
    "YAMLLimit": "config.py and results.py turn it into a ConfigError or DamagedResults naming the file",
    "SweepInterrupted": "Ctrl-C (a KeyboardInterrupt): the CLI prints what was saved and exits 130",
}


def test_every_error_for_the_user_is_one_type_with_one_handler():
    import importlib
    import inspect

    from normbench.errors import UserError

    defined = {}
    for name in modules():
        if name.endswith("__main__"):  # runs the command line
            continue
        module = importlib.import_module(name)
        for cls_name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name:
                defined[cls_name] = cls
    assert {"ConfigError", "DataError", "DamagedResults", "PlotError", "ExportError", "PlanError"} <= set(defined)
    strays = [n for n, c in defined.items() if not issubclass(c, UserError) and n not in INTERNAL_EXCEPTIONS]
    assert not strays, f"errors a user meets that are not UserError: {strays}"
    cli = (PACKAGE / "cli.py").read_text()
    assert cli.count("raise fail(str(") == 1  # in cli._Command.invoke, the one handler: a command raises


def test_the_recorded_points_are_defined_once():
    """points.py names them; the config's histogram ranges, the recorder, the figures, the report and --point read
    them from there."""
    from normbench import points
    from normbench.cli import Point
    from normbench.config import Ranges
    from normbench.record import GRAD_POINTS, POINTS

    assert set(Ranges.model_fields) == {"input", *points.ALL}
    assert (POINTS, GRAD_POINTS) == (points.FORWARD, points.GRADIENT)
    assert [p.value for p in Point] == [*points.ALL, "all"]
    assert set(points.WORDS) == set(points.ALL)
    for path in [*VIEWS.glob("*.py"), PACKAGE / "cli.py"]:
        text = path.read_text()
        assert '"grad_pre_norm"' not in text and '"post_norm"' not in text, path.name


def test_the_views_take_no_boolean_flag_by_position():
    """A flag reads as what it is at every call (`overlay=True`), never as a bare True among positions."""
    found = []
    for path in VIEWS.glob("*.py"):
        name = path.name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                positional = node.args.posonlyargs + node.args.args
                flags = [a.arg for a in positional if a.annotation is not None and ast.unparse(a.annotation) == "bool"]
                found += [f"{name}:{node.name}({arg})" for arg in flags]
    assert not found, found


def test_the_functions_of_the_views_are_short():
    """Every function of normbench/views/ (its def's lines, docstring included) is at most 60 lines long."""
    long = []
    for path in sorted(VIEWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                if node.end_lineno - start + 1 > 60:
                    long.append(f"{path.name}:{node.name} ({node.end_lineno - start + 1} lines)")
    assert not long, long


def test_every_figure_is_one_entry_of_the_table():
    """Each kind in views/figures.py's table draws with a function of the views, has a caption, names its files by
    itself, and is listed in docs/architecture.md; nothing else names a figure's kinds (the report reads the table)."""
    import inspect

    from normbench.views.figures import FIGURES, KINDS, Figure

    assert len(KINDS) == len(FIGURES)
    docs = (ROOT / "docs" / "architecture.md").read_text()
    for kind in FIGURES:
        assert callable(kind.draw) and kind.draw.__module__.startswith("normbench.views."), kind.name
        fig = Figure(kind.name, ("relu",), "activation-relu", "model.activation = relu", "post_act", "train.lr")
        alt, caption = kind.caption(fig)
        assert alt and caption.endswith("."), kind.name
        assert fig.stem.startswith(kind.name), kind.name
        assert f"`{kind.name}`" in docs, f"docs/architecture.md does not list the figure {kind.name!r}"
        assert kind.scope in ("experiment", "group")
    html = inspect.getsource(__import__("normbench.views.html", fromlist=["x"]))
    assert "FigureName" not in html and "_caption" not in html and '"units"' not in html


def test_the_kernel_names_are_defined_once():
    """registry.KERNEL_NAMES names the kernels: the plan's classes, run's --kernel and the claims check's choices
    are read from it."""
    from normbench.claims import KERNELS as CHECK_KERNELS
    from normbench.cli import CheckKernel, KernelName
    from normbench.engine import KERNELS
    from normbench.registry import KERNEL_NAMES

    assert tuple(KERNELS) == KERNEL_NAMES
    assert [k.value for k in KernelName] == ["auto", *KERNEL_NAMES]
    assert [k.value for k in CheckKernel] == list(CHECK_KERNELS)
