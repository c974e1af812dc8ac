"""Georeference of a raster grid: a CRS with an affine geotransform, ground control points (GCPs), or rational
polynomial coefficients (RPCs). Computed once from a dataset and passed along, never re-derived.

Scenes straight from a sensor are often georeferenced only by GCPs (Sentinel-1 GRD, many L1 products) or by RPCs
(Pleiades, WorldView, ...). geoseg keeps them: outputs on the same pixel grid carry the input's GCPs or RPCs (shifted
for a region of the scene), and where pixels must be placed on a map (polygons of a class map, label polygons on an
image grid) the mapping is GDAL's own transformer for them (:class:`rasterio.transform.GCPTransformer`, the
polynomial ``gdalwarp`` uses by default, or :class:`rasterio.transform.RPCTransformer` at the RPCs' mean height).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.rpc import RPC

WGS84 = CRS.from_epsg(4326)


@dataclass(frozen=True)
class Georeference:
    """Where the pixels of a grid lie on the Earth.

    * ``crs`` and ``transform``: the affine georeference (``transform`` is the identity when there is none);
    * ``gcps`` and ``gcps_crs``: ground control points (pixel ``row``/``col`` -> map ``x``/``y`` in ``gcps_crs``);
    * ``rpcs``: rational polynomial coefficients (pixel -> longitude/latitude/height, WGS 84).

    A GeoTIFF has an affine georeference *or* GCPs; RPCs may come with either. The affine one wins when both exist
    (as in GDAL).
    """

    crs: CRS | None = None
    transform: Affine = Affine.identity()
    gcps: tuple[GroundControlPoint, ...] = ()
    gcps_crs: CRS | None = None
    rpcs: RPC | None = None

    @classmethod
    def of(cls, ds: Any) -> Georeference:
        """The georeference of an open rasterio dataset."""
        gcps, gcps_crs = ds.gcps if ds.gcps else ((), None)
        return cls(ds.crs, ds.transform, tuple(gcps or ()), gcps_crs, ds.rpcs)

    # --- what it is ----------------------------------------------------------------------------------------------
    @property
    def has_transform(self) -> bool:
        """Whether the grid has an affine georeference (a CRS, or a geotransform other than the identity)."""
        return self.crs is not None or self.transform != Affine.identity()

    @property
    def kind(self) -> str | None:
        """``"transform"``, ``"gcps"``, ``"rpcs"`` (the georeference that places pixels), or None."""
        if self.has_transform:
            return "transform"
        if self.gcps:
            return "gcps"
        if self.rpcs is not None:
            return "rpcs"
        return None

    @property
    def is_georeferenced(self) -> bool:
        return self.kind is not None

    @property
    def map_crs(self) -> CRS | None:
        """The CRS of map coordinates: the affine CRS, the GCPs' CRS, or WGS 84 for RPCs."""
        kind = self.kind
        if kind == "gcps":
            return self.gcps_crs
        if kind == "rpcs":
            return WGS84
        return self.crs

    def describe(self) -> str:
        """One phrase for messages and ``geoseg info``: how the grid is georeferenced."""
        kind = self.kind
        if kind is None:
            return "no georeference (no CRS, geotransform, GCPs or RPCs)"
        if kind == "gcps":
            crs = self.gcps_crs.to_string() if self.gcps_crs else "no CRS"
            return f"{len(self.gcps)} ground control points (GCPs) in {crs}, no geotransform"
        if kind == "rpcs":
            return "rational polynomial coefficients (RPCs), no geotransform"
        crs = self.crs.to_string() if self.crs else "no CRS"
        return f"{crs} with a geotransform" + (" and RPCs" if self.rpcs is not None else "")

    def same_as(self, other: Georeference) -> bool:
        """Whether both grids place every pixel at the same place (same CRS and transform, GCPs or RPCs)."""
        if self.kind != other.kind:
            return False
        if self.kind == "transform":
            return self.crs == other.crs and self.transform.almost_equals(other.transform, precision=1e-9)
        if self.kind == "gcps":
            return self.gcps_crs == other.gcps_crs and _gcp_tuples(self.gcps) == _gcp_tuples(other.gcps)
        if self.kind == "rpcs":
            return self.rpcs is not None and other.rpcs is not None and self.rpcs.to_dict() == other.rpcs.to_dict()
        return True

    # --- derived grids -------------------------------------------------------------------------------------------
    def shifted(self, row_off: int, col_off: int) -> Georeference:
        """The georeference of the window starting at pixel (``row_off``, ``col_off``) of this grid."""
        if not row_off and not col_off:
            return self
        gcps = tuple(
            GroundControlPoint(g.row - row_off, g.col - col_off, g.x, g.y, g.z, g.id, g.info) for g in self.gcps
        )
        rpcs = None
        if self.rpcs is not None:
            rpcs = RPC(**{**self.rpcs.to_dict(), "line_off": self.rpcs.line_off - row_off,
                          "samp_off": self.rpcs.samp_off - col_off})  # fmt: skip
        # GCPs/RPCs place the pixels: the identity transform stays, or the window would look affine-georeferenced
        transform = (
            self.transform if self.kind in ("gcps", "rpcs") else self.transform @ Affine.translation(col_off, row_off)
        )
        return dataclasses.replace(self, transform=transform, gcps=gcps, rpcs=rpcs)

    def creation_options(self) -> dict[str, Any]:
        """Keyword arguments of ``rasterio.open(path, "w", ...)`` that write this georeference."""
        if self.kind in ("gcps", "rpcs"):
            opts: dict[str, Any] = {}
            if self.gcps:
                opts["gcps"] = list(self.gcps)
                opts["crs"] = self.gcps_crs
            if self.rpcs is not None:
                opts["rpcs"] = self.rpcs
            return opts
        opts = {"crs": self.crs, "transform": self.transform}
        if self.rpcs is not None:
            opts["rpcs"] = self.rpcs
        return opts

    # --- pixels <-> map ------------------------------------------------------------------------------------------
    def pixel_to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates (in :attr:`map_crs`) of continuous pixel coordinates (``cols``, ``rows``; the top-left
        corner of the grid is (0, 0), pixel centres are at +0.5). Arrays of float64, any shape."""
        cols = np.asarray(cols, np.float64)
        rows = np.asarray(rows, np.float64)
        if self.kind in (None, "transform"):
            t = self.transform
            return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
        with self._transformer() as tr:
            xs, ys = tr.xy(rows.ravel(), cols.ravel(), offset="ul", **self._heights(rows.size))
        return np.asarray(xs, np.float64).reshape(cols.shape), np.asarray(ys, np.float64).reshape(rows.shape)

    def map_to_pixel(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous pixel coordinates (``cols``, ``rows``) of map coordinates in :attr:`map_crs` (float64)."""
        xs = np.asarray(xs, np.float64)
        ys = np.asarray(ys, np.float64)
        if self.kind in (None, "transform"):
            inv = ~self.transform
            return inv.a * xs + inv.b * ys + inv.c, inv.d * xs + inv.e * ys + inv.f
        with self._transformer() as tr:
            rows, cols = tr.rowcol(xs.ravel(), ys.ravel(), op=np.positive, **self._heights(xs.size))
        return np.asarray(cols, np.float64).reshape(xs.shape), np.asarray(rows, np.float64).reshape(ys.shape)

    def _transformer(self) -> Any:
        from rasterio.transform import GCPTransformer, RPCTransformer

        if self.kind == "gcps":
            return GCPTransformer(list(self.gcps))
        return RPCTransformer(self.rpcs)

    def _heights(self, n: int) -> dict[str, Any]:
        if self.kind == "rpcs" and self.rpcs is not None:
            return {"zs": np.full(n, float(self.rpcs.height_off))}
        return {}


def _gcp_tuples(gcps: tuple[GroundControlPoint, ...]) -> list[tuple[float, ...]]:
    return [(g.row, g.col, g.x, g.y, g.z or 0.0) for g in gcps]


__all__ = ["Georeference"]
