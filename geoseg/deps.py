"""Optional dependencies: which distribution provides each third-party import, and which extra installs it.

One table serves two ends: the CLI turns a missing optional module into one line naming the ``pip install`` that
fixes it, and ``tests/test_dependencies.py`` checks that every third-party import in geoseg is declared in
``pyproject.toml`` under the extra that the importing module needs.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import metadata

# top-level import name -> distribution name on PyPI (normalized: lower case, "-")
IMPORT_TO_DIST: dict[str, str] = {
    "affine": "affine",
    "bokeh": "bokeh",
    "click": "click",
    "dask": "dask",
    "dask_cuda": "dask-cuda",
    "dask_jobqueue": "dask-jobqueue",
    "distributed": "dask",
    "geopandas": "geopandas",
    "huggingface_hub": "huggingface-hub",
    "matplotlib": "matplotlib",
    "numpy": "numpy",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "pyogrio": "pyogrio",
    "pyproj": "pyproj",
    "rasterio": "rasterio",
    "rioxarray": "rioxarray",
    "safetensors": "safetensors",
    "scipy": "scipy",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "shapely": "shapely",
    "sklearn": "scikit-learn",
    "timm": "timm",
    "tomli": "tomli",
    "torch": "torch",
    "torchvision": "torchvision",
    "tqdm": "tqdm",
    "xarray": "xarray",
    "yaml": "pyyaml",
}


def normalize_dist(name: str) -> str:
    """PEP 503 normalized distribution name (``PyYAML`` -> ``pyyaml``, ``dask_cuda`` -> ``dask-cuda``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return normalize_dist(re.split(r"[\s\[<>=!~;(]", req.strip(), maxsplit=1)[0])


@lru_cache(maxsize=1)
def installed_extras() -> dict[str, set[str]]:
    """``{extra: {distribution, ...}}`` from geoseg's installed metadata (``""`` holds the base requirements).

    Self-references such as ``geoseg[vector,report]`` are expanded. Empty when geoseg is not installed (a source
    checkout run through ``PYTHONPATH`` alone).
    """
    try:
        reqs = metadata.requires("geoseg") or []
    except metadata.PackageNotFoundError:
        return {}
    extras: dict[str, set[str]] = {"": set()}
    nested: dict[str, set[str]] = {}
    for req in reqs:
        body, _, marker = req.partition(";")
        m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        extra = normalize_dist(m.group(1)) if m else ""
        name = _requirement_name(body)
        if name == "geoseg":
            inner = re.search(r"\[([^\]]*)\]", body)
            nested.setdefault(extra, set()).update(
                normalize_dist(e) for e in (inner.group(1) if inner else "").split(",")
            )
            continue
        extras.setdefault(extra, set()).add(name)
    for extra, parts in nested.items():
        for part in parts:
            extras.setdefault(extra, set()).update(extras.get(part, set()))
    return extras


def extra_for(module: str) -> str | None:
    """The smallest geoseg extra that installs the distribution providing top-level ``module`` (None: unknown)."""
    dist = IMPORT_TO_DIST.get(module.split(".")[0])
    if dist is None:
        return None
    candidates = [e for e, dists in installed_extras().items() if dist in dists and e not in ("all", "dev")]
    if not candidates:
        return None
    return min(candidates, key=lambda e: (len(installed_extras()[e]), e))


def missing_dependency_message(module: str) -> str:
    """One line for an ``ImportError`` of ``module``: what is missing and the ``pip install`` that fixes it."""
    top = module.split(".")[0]
    dist = IMPORT_TO_DIST.get(top, top)
    extra = extra_for(top)
    if top == "torch":
        return (
            "this needs PyTorch, which is not installed; install it (CPU: pip install torch, or the CUDA build for "
            "your GPU from pytorch.org), then retry. geoseg info, evaluate and vectorize work without it"
        )
    if extra == "":
        return f"the required package {dist!r} is missing; reinstall geoseg (pip install geoseg)"
    hint = f"pip install 'geoseg[{extra}]'" if extra else f"pip install {dist}"
    return f"this needs the optional package {dist!r} (import {top!r}), which is not installed: {hint}"
