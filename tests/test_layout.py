"""The device package stands alone: ``edge`` never imports ``convert`` (training and measuring)
nor TensorFlow, checked in its source and by importing every module of it in a fresh process."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import edge
from edge import cli

EDGE = Path(edge.__file__).resolve().parent
FORBIDDEN = ("convert", "tensorflow", "tf_keras", "keras")


def edge_modules() -> list[str]:
    names = []
    for path in sorted(EDGE.rglob("*.py")):
        parts = path.relative_to(EDGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported(path: Path) -> list[str]:
    """Every module an ``import`` statement in ``path`` names, at any depth of the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append(node.module)
    return out


def test_no_edge_source_imports_convert_or_tensorflow():
    bad = [f"{path.relative_to(EDGE.parent)}: import {name}"
           for path in EDGE.rglob("*.py") for name in imported(path)
           if name.split(".")[0] in FORBIDDEN]
    assert bad == []


def test_the_cli_names_the_measuring_commands_only_by_module_and_they_exist():
    """``maskdoor eval`` and ``bench`` live in convert.measure; the CLI holds their module names
    (its one mention of convert) and loads one only when it is run."""
    mentions = [(path.relative_to(EDGE.parent), node.value)
                for path in EDGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.startswith("convert.")]
    assert sorted(m for _, m in mentions) == sorted(cli.MEASURING.values())
    assert {str(p) for p, _ in mentions} == {"edge/cli.py"}
    for cmd in cli.MEASURING:
        assert callable(getattr(cli.measuring(cmd), {"eval": "run_eval", "bench": "run_bench"}[cmd]))


def test_importing_every_edge_module_loads_nothing_that_trains_or_measures():
    modules = edge_modules()
    assert len(modules) > 30 and "edge.inference.detectors.tflite_ssd" in modules
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=EDGE.parent)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert set(modules) <= set(loaded)
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []
