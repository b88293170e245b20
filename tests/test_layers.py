"""The package reads as its data flow: structures -> neighbors -> energy and derivatives
-> relax -> search, with ml and io at the sides. No module imports a layer above its
own, and no jcsp import hides inside a function (a lazy import is how an upward import
usually sneaks in). Checked on the source with Python's own parser."""

from __future__ import annotations

import ast
import pathlib

import pytest

import jcsp

ROOT = pathlib.Path(jcsp.__file__).parent

#: Layer of each top-level part of the package; a module may import its own layer and
#: the layers below it. ml and io sit beside the flow: ml (the learned potential, its
#: training and data) needs the energy layers and the ASE adapter, io (files and
#: potentials by name) also loads trained models; search writes files with io and
#: grades structures with ml; generative (the diffusion sampler)
#: builds on ml and feeds search.
LAYERS = {
    "units": 0, "version": 0, "compile_cache": 0, "settings": 0,
    "structures": 1,
    "neighbors": 2, "graph": 2,
    "potentials": 3,
    "derivatives": 4, "capacity": 4, "sharding": 4,
    "calculator": 5, "ml": 5,
    "relax": 6, "io": 6, "potential_spec": 6, "generative": 6, "oracle": 6,
    "search": 7,
    "cli": 8, "cli_ml": 8, "cli_generative": 8,
    "__init__": 9, "__main__": 9,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(package: list, name: str) -> bool:
    folder = ROOT.parent.joinpath(*package)
    return (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists()


def _imports():
    """(module, imported module, line, inside a function?) for every jcsp import."""
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        inside = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    if path.name != "__init__.py":
                        base = base[:-1]
                    base = base[: len(base) - node.level + 1]
                    if node.module:
                        targets = [".".join(base + [node.module])]
                    else:  # from .. import neighbors: a module, or a name of the package
                        targets = [".".join(base + [alias.name]) if _is_module(base, alias.name)
                                   else ".".join(base) for alias in node.names]
                else:
                    targets = [node.module or ""]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "jcsp" or target.startswith("jcsp."):
                    yield module, target, node.lineno, id(node) in inside


def test_every_part_has_a_layer():
    parts = {_part(m) for m, *_ in _imports()} | {_part(t) for _, t, *_ in _imports()}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


def test_no_module_imports_a_layer_above_it():
    upward = [f"{m}:{line} imports {t}" for m, t, line, _ in _imports()
              if _part(t) != "__init__" and LAYERS[_part(t)] > LAYERS[_part(m)]]
    upward += [f"{m}:{line} imports the package root" for m, t, line, _ in _imports()
               if t == "jcsp" and _part(m) != "__init__"]
    assert not upward, "\n".join(upward)


def test_no_jcsp_import_inside_a_function():
    lazy = [f"{m}:{line} imports {t}" for m, t, line, inside in _imports() if inside]
    assert not lazy, "\n".join(lazy)


@pytest.mark.parametrize("module, target", [("jcsp.potentials.base", "jcsp.ml"),
                                            ("jcsp.search.run", "jcsp.cli")])
def test_the_check_would_catch_an_upward_import(module, target):
    """The rule itself: these imports would be upward."""
    assert LAYERS[_part(target)] > LAYERS[_part(module)]
