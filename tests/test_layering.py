"""The package layering of DESIGN.md: data flows one way, and torch stays in models/, inference/ and train/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geoseg"
TORCH_PACKAGES = ("models", "inference", "train")


def _imports(path: Path, *, module_level: bool) -> set[str]:
    """Modules imported by ``path`` (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_torch_only_in_model_inference_and_train_packages(path: Path) -> None:
    """Outside models/, inference/ and train/ torch is never imported at module level (lazily inside a function
    that needs it, at most)."""
    if path.relative_to(PACKAGE).parts[0] in TORCH_PACKAGES:
        return
    torch_imports = {m for m in _imports(path, module_level=True) if m == "torch" or m.startswith("torch.")}
    assert not torch_imports, f"{path.relative_to(PACKAGE)} imports {sorted(torch_imports)} at module level"


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("evaluation.py", "geoseg.vectorization"),  # shared helpers live in io/
        # training uses the prediction pipeline (self-training predicts the image); prediction never needs training
        ("inference", "geoseg.train"),
        ("io", "geoseg.inference"),
        ("io", "geoseg.models"),
        ("io", "geoseg.train"),
        ("metrics.py", "geoseg.io"),
        ("tiling.py", "geoseg.io"),
    ],
)
def test_lower_layers_do_not_import_higher_ones(importer: str, forbidden: str) -> None:
    target = PACKAGE / importer
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    for path in files:
        bad = {m for m in _imports(path, module_level=False) if m == forbidden or m.startswith(forbidden + ".")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_torch_free_entry_points_do_not_import_torch() -> None:
    """evaluate, vectorize, info and the whole CLI (with its registry-driven choices) load without torch."""
    code = (
        "import sys, geoseg, geoseg.evaluation, geoseg.vectorization, geoseg.report, geoseg.metrics, geoseg.inference, "
        "geoseg.cli.main; from geoseg.cli.main import cli; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_functions_are_functions_whatever_was_imported_first() -> None:
    """geoseg.evaluate and geoseg.vectorize are the functions, never modules of the same name."""
    code = (
        "import geoseg.evaluation, geoseg.vectorization.pipeline, geoseg; import types; "
        "assert callable(geoseg.evaluate) and not isinstance(geoseg.evaluate, types.ModuleType); "
        "assert callable(geoseg.vectorize) and not isinstance(geoseg.vectorize, types.ModuleType)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
