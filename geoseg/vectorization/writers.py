"""Polygon writers: attribute batches -> a GeoPackage, GeoJSON, FlatGeobuf, Shapefile or GeoParquet file written
incrementally and atomically, or a GeoDataFrame. No torch. Formats are chosen by extension in one place,
:mod:`geoseg.io.formats`."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from geoseg.errors import GeoSegError
from geoseg.io.formats import COMPANION_SUFFIXES
from geoseg.io.write import atomic_path, output_error, parse_temporary
from geoseg.vectorization.attributes import attribute_schema

#: GeoPackage 1.2, which every GDAL since 2.2 reads without a warning: GDAL 3.7+ writes 1.4 by default, and QGIS
#: 3.28/3.34/3.40 on GDAL 3.6 (e.g. Debian bookworm) warn that a 1.4 file "may only be partially supported"
GPKG_OPTIONS = {"VERSION": "1.2"}


@dataclass
class VectorizeResult:
    """What :func:`vectorize` wrote when given a ``dst`` path."""

    path: Path
    driver: str
    features: int
    crs: str | None
    per_class: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.features


def _record_batch(cols: dict[str, np.ndarray], schema: Any) -> Any:
    import pyarrow as pa

    pool = pa.system_memory_pool()  # plain malloc: freed batches go back to the OS (see release_freed_memory)
    arrays = []
    for f in schema:
        v = cols[f.name]
        if f.name == "geometry":
            arrays.append(pa.array(shapely.to_wkb(v), type=pa.binary(), memory_pool=pool))
        else:
            arrays.append(pa.array(v.tolist() if v.dtype == object else v, type=f.type, memory_pool=pool))
    return pa.record_batch(arrays, schema=schema)


def to_geodataframe(batches: Iterator[dict[str, np.ndarray]], crs: Any, with_prob: bool) -> Any:
    """All attribute batches (see :class:`~geoseg.vectorization.attributes.FeatureBuilder`) as one GeoDataFrame."""
    import geopandas as gpd
    import pandas as pd

    frames = [
        pd.DataFrame({k: v for k, v in cols.items() if k != "geometry"}).assign(geometry=cols["geometry"])
        for cols in batches
    ]
    columns = [f.name for f in attribute_schema(with_prob)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in columns})
    df["class_id"] = df["class_id"].astype(np.int32)
    df["pixels"] = df["pixels"].astype(np.int64)
    return gpd.GeoDataFrame(df[columns], geometry="geometry", crs=crs)


def _crs_string(crs: Any) -> str | None:
    if crs is None:
        return None
    from pyproj import CRS

    return CRS.from_user_input(crs).to_wkt()


def write_features(
    path: Path,
    driver: str,
    batches: Iterator[dict[str, np.ndarray]],
    crs: Any,
    with_prob: bool,
    connectivity: int,
    overwrite: bool,
    layer: str | None,
) -> VectorizeResult:
    """Stream attribute batches into ``path`` with ``driver`` (a value of :data:`geoseg.io.formats.VECTOR_FORMATS`),
    atomically.

    A Shapefile's companion files (``.shx``, ``.dbf``, ``.prj``, ``.cpg``) are written and published with it.

    Raises:
        OutputError: the file cannot be written (the partial file is removed); a full disk is reported as such,
            whatever the writer's own words for it (:func:`geoseg.io.write.output_error`).
        GeoSegError: the polygon stream failed, e.g. :class:`~geoseg.errors.CancelledError` (raised as is).
    """
    schema = attribute_schema(with_prob)
    counts: dict[str, int] = {}
    total = 0
    failure: list[BaseException] = []

    def record_batches() -> Iterator[Any]:
        nonlocal total
        try:
            for cols in batches:
                for name in cols["class_name"]:
                    counts[name] = counts.get(name, 0) + 1
                total += len(cols["class_id"])
                yield _record_batch(cols, schema)
        except BaseException as exc:  # surfaced after GDAL/pyarrow gives up on the stream
            failure.append(exc)
            raise

    geometry_type = "MultiPolygon" if connectivity == 8 else "Polygon"
    with atomic_path(path, overwrite=overwrite, companions=COMPANION_SUFFIXES.get(driver, ())) as tmp:
        try:
            if driver == "GeoParquet":
                _write_geoparquet(tmp, schema, record_batches(), crs, geometry_type)
            else:
                import pyarrow as pa
                import pyogrio

                reader = pa.RecordBatchReader.from_batches(schema, record_batches())
                # the layer is named after the output's final name, also when ``path`` is a staged temporary (predict
                # --vector) and for GeoJSON, whose one layer's name GDAL would otherwise take from the file written
                staged = parse_temporary(path.name)
                kwargs: dict[str, Any] = {"layer": layer or Path(staged[0] if staged else path.name).stem}
                if driver == "GPKG":
                    kwargs["dataset_options"] = GPKG_OPTIONS
                with warnings.catch_warnings():  # geoseg says itself when polygons have no CRS (vectorize)
                    warnings.filterwarnings("ignore", message=".*'crs' was not provided", category=UserWarning)
                    pyogrio.write_arrow(
                        reader,
                        tmp,
                        driver=driver,
                        geometry_name="geometry",
                        geometry_type=geometry_type,
                        crs=_crs_string(crs),
                        **kwargs,
                    )
        except BaseException as exc:
            if failure:  # the polygon stream failed (e.g. cancelled): raise that, not GDAL's report of it
                raise failure[0] from None
            if isinstance(exc, GeoSegError) or not isinstance(exc, Exception):
                raise
            raise output_error(exc, path) from exc
    return VectorizeResult(path, driver, total, _crs_string(crs), counts)


def _write_geoparquet(tmp: Path, schema: Any, batches: Iterator[Any], crs: Any, geometry_type: str) -> None:
    """GeoParquet 1.0 written row group by row group with pyarrow (WKB geometry)."""
    import pyarrow.parquet as pq

    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": [geometry_type]}
    if crs is not None:
        from pyproj import CRS

        column["crs"] = CRS.from_user_input(crs).to_json_dict()
    else:
        column["crs"] = None
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
    schema = schema.with_metadata({b"geo": json.dumps(geo).encode()})
    with pq.ParquetWriter(str(tmp), schema) as writer:
        for batch in batches:
            writer.write_batch(batch.replace_schema_metadata(schema.metadata))
