"""Polygon attributes: pixel-space polygons from :mod:`geoseg.vectorization.polygons` -> attribute columns and world
geometries (filtered by area, simplified, reprojected). No torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
import shapely

from geoseg.io.georef import Georeference


def _area_m2_function(crs: Any) -> Any:
    """A function geometries(map units) -> area in m², or None when unknown."""
    if crs is None:
        return None
    from pyproj import CRS

    pcrs = CRS.from_user_input(crs)
    geod = pcrs.get_geod() if pcrs.is_geographic else None
    if geod is not None:

        def geodesic(geoms: np.ndarray, areas: np.ndarray) -> np.ndarray:
            return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms], dtype=np.float64)

        return geodesic
    factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0

    def planar(geoms: np.ndarray, areas: np.ndarray) -> np.ndarray:
        return areas * factor**2

    return planar


class FeatureBuilder:
    """Turns pixel-space polygons into attribute columns + world geometries (filter, simplify, reproject).

    :meth:`build` takes a batch of ``(class_id, pixels, probability_sum, polygon_in_pixel_coords)`` from
    :func:`geoseg.vectorization.polygons.polygonize_stream` and returns the columns ``class_id``, ``class_name``,
    ``pixels``, ``area`` (map units², before simplification), ``area_m2`` (NaN without a CRS), optional
    ``mean_prob`` and ``geometry`` (world coordinates, in ``out_crs`` when given), or None when every polygon is
    smaller than ``min_area``.
    """

    def __init__(
        self,
        ds: rasterio.DatasetReader,
        *,
        names: Sequence[str] | None,
        min_area: float,
        simplify: float,
        connectivity: int,
        out_crs: Any,
        with_prob: bool,
    ) -> None:
        self.georef = Georeference.of(ds)
        self.transform = ds.transform
        # an affine grid has one pixel area; through GCPs or RPCs the area is measured on each world polygon
        self.affine = self.georef.kind in (None, "transform")
        self.pixel_area = abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)
        self.names = list(names) if names else None
        self.min_area = min_area
        self.simplify = simplify
        self.multi = connectivity == 8
        self.src_crs = self.georef.map_crs
        self.out_crs = out_crs
        self.with_prob = with_prob
        self.area_m2 = _area_m2_function(self.src_crs)

    def _to_map(self, geoms: np.ndarray) -> np.ndarray:
        """Pixel-space polygons -> map coordinates (the affine transform, or GDAL's GCP/RPC transformer)."""
        georef = self.georef
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(georef.pixel_to_map(xy[:, 0], xy[:, 1])))
        if self.affine:
            t = self.transform
            mirrored = t.a * t.e - t.b * t.d > 0  # a south-up grid mirrors rings
        else:
            mirrored = True  # orientation after a GCP/RPC mapping is not known in advance
        if mirrored and hasattr(shapely, "orient_polygons"):  # restore the orientation GDAL writes
            geoms = shapely.orient_polygons(geoms)
        return geoms

    def name(self, cid: int) -> str:
        return self.names[cid] if self.names and 0 <= cid < len(self.names) else str(cid)

    def build(self, batch: list[tuple[int, int, float, Any]]) -> dict[str, np.ndarray] | None:
        cls = np.array([b[0] for b in batch], dtype=np.int64)
        pixels = np.array([b[1] for b in batch], dtype=np.int64)
        psum = np.array([b[2] for b in batch], dtype=np.float64)
        geoms = np.empty(len(batch), dtype=object)
        geoms[:] = [b[3] for b in batch]
        if not self.affine:
            geoms = self._to_map(geoms)
            area = shapely.area(geoms).astype(np.float64)
        else:
            area = pixels * self.pixel_area
        keep = area >= self.min_area if self.min_area > 0 else np.ones(len(batch), dtype=bool)
        if not keep.any():
            return None
        cls, pixels, psum, geoms, area = cls[keep], pixels[keep], psum[keep], geoms[keep], area[keep]
        if self.affine:
            geoms = self._to_map(geoms)
        area_m2 = self.area_m2(geoms, area) if self.area_m2 is not None else np.full(area.shape, np.nan)
        if self.simplify > 0:
            geoms = shapely.simplify(geoms, self.simplify, preserve_topology=True)
        if self.multi:
            single = shapely.get_type_id(geoms) == 3
            if single.any():
                multi = np.empty(int(single.sum()), dtype=object)
                multi[:] = [shapely.MultiPolygon([g]) for g in geoms[single]]
                geoms[single] = multi
        if self.out_crs is not None and self.src_crs is not None and self.out_crs != self.src_crs:
            import geopandas as gpd

            geoms = gpd.GeoSeries(geoms, crs=self.src_crs).to_crs(self.out_crs).values.to_numpy()
        cols: dict[str, np.ndarray] = {
            "class_id": cls.astype(np.int32),
            "class_name": np.array([self.name(int(c)) for c in cls], dtype=object),
            "pixels": pixels,
            "area": area,
            "area_m2": area_m2,
        }
        if self.with_prob:
            cols["mean_prob"] = psum / pixels
        cols["geometry"] = geoms
        return cols


def attribute_schema(with_prob: bool) -> Any:
    """The pyarrow schema of the columns :meth:`FeatureBuilder.build` makes (geometry as WKB)."""
    import pyarrow as pa

    fields = [
        pa.field("class_id", pa.int32()),
        pa.field("class_name", pa.string()),
        pa.field("pixels", pa.int64()),
        pa.field("area", pa.float64()),
        pa.field("area_m2", pa.float64()),
    ]
    if with_prob:
        fields.append(pa.field("mean_prob", pa.float64()))
    fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields)
