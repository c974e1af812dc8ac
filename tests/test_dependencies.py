"""Every third-party import in geoseg is declared in pyproject.toml, under the extra its module needs.

The modules are read with ``ast`` (top-level and function-level imports, and dynamic imports by name), so an import
added anywhere without its declaration fails here, before a user's fresh install does.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

from geoseg.deps import IMPORT_TO_DIST, missing_dependency_message, normalize_dist

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "geoseg"

# module (dotted prefix, longest wins) -> the extras a user installs to use it; every other module needs only the
# base requirements. A module may import only what base + these extras declare.
MODULE_EXTRAS: dict[str, set[str]] = {
    "geoseg.datasets": {"datasets", "vector"},  # the SpaceNet buildings come as polygons
    "geoseg.distributed": {"distributed", "torch", "jobqueue", "cuda"},
    "geoseg.evaluation": {"vector"},  # polygon truth only; raster truth needs the base install
    "geoseg.inference": {"torch", "onnx"},
    "geoseg.io.labels": {"vector"},  # label polygons (training and evaluation)
    "geoseg.io.xarray_view": {"xarray"},
    "geoseg.models": {"torch", "onnx"},
    "geoseg.models.adapt": {"torch", "smp"},  # torchvision:/timm: named weight sources
    "geoseg.models.smp": {"torch", "smp"},
    "geoseg.models.onnx": {"torch", "onnx"},
    "geoseg.report": {"report"},
    "geoseg.threads": {"torch"},  # torch's thread setting; imported by inference and train only
    "geoseg.train": {"torch", "vector"},
    "geoseg.train.baseline": {"torch", "vector", "baseline"},  # --baseline rf
    "geoseg.train.config": {"config"},
    "geoseg.vectorization": {"vector"},
}

# declared distributions that no geoseg module imports by name, and why they are declared
INDIRECT = {
    "bokeh": "the Dask dashboard that `geoseg batch` links to needs it",
    "onnxscript": "torch.onnx's dynamo exporter imports it",
    "xarray": "open_dataarray returns xarray objects, built by rioxarray",
}

DYNAMIC_IMPORTERS = {"__import__", "import_module", "_require", "_optional"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _req_name(req: str) -> str:
    import re

    return normalize_dist(re.split(r"[\s\[<>=!~;(]", req.strip(), maxsplit=1)[0])


def declared() -> dict[str, set[str]]:
    """``{extra: {dist}}`` with ``""`` for the base requirements; ``geoseg[a,b]`` self-references expanded."""
    project = _pyproject()["project"]
    out = {"": {_req_name(r) for r in project["dependencies"]}}
    optional = project.get("optional-dependencies", {})
    for extra, reqs in optional.items():
        out[extra] = set()
        for req in reqs:
            if _req_name(req) != "geoseg":
                out[extra].add(_req_name(req))
    for extra, reqs in optional.items():
        for req in reqs:
            if _req_name(req) == "geoseg":
                for inner in req[req.index("[") + 1 : req.index("]")].split(","):
                    out[extra] |= out[inner.strip()]
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of non-stdlib, non-geoseg modules imported anywhere in ``path`` (incl. by name)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if fname in DYNAMIC_IMPORTERS and isinstance(node.args[0].value, str):
                names.add(node.args[0].value.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "geoseg"}


def extras_of(module: str) -> set[str]:
    best = ""
    for prefix in MODULE_EXTRAS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return MODULE_EXTRAS.get(best, set())


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_import_name_maps_to_a_distribution() -> None:
    unknown = {
        f"{module_name(p)}: {name}" for p in SOURCES for name in third_party_imports(p) if name not in IMPORT_TO_DIST
    }
    assert not unknown, f"add these imports to geoseg.deps.IMPORT_TO_DIST: {sorted(unknown)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_module_imports_are_declared_in_its_extras(path: Path) -> None:
    decl = declared()
    module = module_name(path)
    extras = extras_of(module)
    unknown_extras = extras - set(decl)
    assert not unknown_extras, f"MODULE_EXTRAS names extras pyproject.toml lacks: {unknown_extras}"
    allowed = decl[""].union(*(decl[e] for e in extras))
    missing = {
        f"{name} (distribution {IMPORT_TO_DIST[name]})"
        for name in third_party_imports(path)
        if name in IMPORT_TO_DIST and IMPORT_TO_DIST[name] not in allowed
    }
    assert not missing, (
        f"{module} imports {sorted(missing)}, which neither the base requirements nor its extras "
        f"{sorted(extras) or '(none)'} declare: add them to pyproject.toml or to MODULE_EXTRAS"
    )


def test_declared_distributions_are_used() -> None:
    decl = declared()
    imported = {IMPORT_TO_DIST[n] for p in SOURCES for n in third_party_imports(p) if n in IMPORT_TO_DIST}
    runtime = set().union(*(d for e, d in decl.items() if e != "dev"))
    unused = runtime - imported - set(INDIRECT)
    assert not unused, f"declared but never imported by geoseg (remove them, or say why in INDIRECT): {unused}"


def test_all_extra_holds_every_runtime_extra_but_the_hardware_specific_ones() -> None:
    decl = declared()
    # hardware-specific, or (smp) pulling torchvision, which needs its own torch build: installed on purpose
    special = {"", "all", "dev", "torch", "jobqueue", "cuda", "smp"}
    for extra, dists in decl.items():
        if extra not in special:
            assert dists <= decl["all"], f"geoseg[all] lacks the {extra!r} extra ({sorted(dists - decl['all'])})"


def test_requires_python_admits_only_versions_the_code_runs_on() -> None:
    spec = _pyproject()["project"]["requires-python"]
    assert spec.replace(" ", "") == ">=3.11", spec
    uses_tomllib = any("tomllib" in third_party_imports(p) | _stdlib_imports(p) for p in SOURCES)
    assert uses_tomllib, "tomllib is no longer used: requires-python may be lowered (test the lowest version)"


def _stdlib_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & set(sys.stdlib_module_names)


def test_missing_dependency_message_names_the_install_command() -> None:
    msg = missing_dependency_message("geopandas.io")
    assert "geopandas" in msg and "pip install" in msg
    assert "torch" in missing_dependency_message("torch.nn")
