"""vectorize: window-by-window polygonization equals whole-raster polygonization; formats; attributes; errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasters import TRANSFORM, write_raster

from geoseg.errors import GeoSegError, InvalidParameterError, NoValidDataError, OutputExistsError
from geoseg.vectorization import VECTOR_FORMATS, vectorize


def tricky_scene(rows: int = 97, cols: int = 103, seed: int = 0, nodata: int | None = 255) -> np.ndarray:
    """Random blocks + a ring with a hole + checkerboard diagonal touches + a nodata patch."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, size=(rows // 5 + 2, cols // 5 + 2))
    a = np.kron(coarse, np.ones((5, 5), dtype=np.int64))[:rows, :cols].astype(np.uint8)
    noise = rng.random((rows, cols)) < 0.08
    a[noise] = rng.integers(0, 4, size=int(noise.sum()))
    a[10:40, 10:40] = 1  # a ring of class 1 with a hole of class 2 crossing many window borders
    a[18:32, 18:32] = 2
    a[22:26, 22:26] = 1  # an island inside the hole
    cb = (np.add.outer(np.arange(20), np.arange(20)) % 2).astype(np.uint8)  # diagonal touches everywhere
    a[50:70, 60:80] = cb * 3
    a[45, 0:cols] = 0  # a long thin line across all windows
    if nodata is not None:
        a[80:90, 5:30] = nodata
        a[0:3, 90:] = nodata
    return a


def reference(a: np.ndarray, transform: Affine, connectivity: int, nodata: int | None) -> gpd.GeoDataFrame:
    mask = a != nodata if nodata is not None else None
    geoms, vals = [], []
    for g, v in rasterio.features.shapes(a, mask=mask, connectivity=connectivity, transform=transform):
        geoms.append(shapely.make_valid(shapely.geometry.shape(g)))
        vals.append(int(v))
    return gpd.GeoDataFrame({"class_id": vals}, geometry=geoms)


def assert_same(got: gpd.GeoDataFrame, ref: gpd.GeoDataFrame) -> None:
    assert len(got) == len(ref)
    for cid in sorted(set(ref.class_id)):
        g = got[got.class_id == cid]
        r = ref[ref.class_id == cid]
        assert len(g) == len(r), f"class {cid}: {len(g)} polygons vs {len(r)}"
        assert np.isclose(g.geometry.area.sum(), r.geometry.area.sum())
        assert np.isclose(g["area"].sum(), r.geometry.area.sum())
        gu, ru = shapely.union_all(g.geometry.values), shapely.union_all(r.geometry.values)
        assert gu.symmetric_difference(ru).area < 1e-6
        # polygon by polygon: match on a point inside each reference polygon
        ga = sorted(np.round(g.geometry.area.values, 6))
        ra = sorted(np.round(r.geometry.area.values, 6))
        assert ga == ra
    tree = shapely.STRtree(got.geometry.values)
    for geom, cid in zip(ref.geometry.values, ref.class_id):
        pt = shapely.point_on_surface(geom)
        hits = [i for i in tree.query(pt, predicate="within") if got.class_id.iloc[i] == cid]
        assert len(hits) == 1
        assert got.geometry.iloc[hits[0]].symmetric_difference(geom).area < 1e-6


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("window", [7, 16])
def test_identity_with_whole_raster(tmp_path: Path, connectivity: int, window: int) -> None:
    a = tricky_scene()
    src = write_raster(tmp_path / "c.tif", a, nodata=255)
    got = vectorize(src, connectivity=connectivity, window=window)
    ref = reference(a, TRANSFORM, connectivity, 255)
    assert_same(got, ref)
    assert 255 not in set(got.class_id)
    whole = vectorize(src, connectivity=connectivity, window=4096)
    assert_same(whole, ref)
    assert got.geometry.is_valid.all()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_identity_random_noise(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, size=(41, 37)).astype(np.uint8)
    src = write_raster(tmp_path / "n.tif", a, nodata=None)
    for conn in (4, 8):
        got = vectorize(src, connectivity=conn, window=5)
        assert_same(got, reference(a, TRANSFORM, conn, None))


def test_holes_are_kept(tmp_path: Path) -> None:
    a = np.zeros((30, 30), dtype=np.uint8)
    a[5:25, 5:25] = 1
    a[10:20, 10:20] = 0
    src = write_raster(tmp_path / "h.tif", a)
    got = vectorize(src, window=8)
    ring = got[got.class_id == 1].geometry.iloc[0]
    assert len(ring.interiors) == 1
    assert ring.area == pytest.approx((400 - 100) * 100)
    assert len(got[got.class_id == 0]) == 2


def test_attributes_probability_and_names(tmp_path: Path) -> None:
    a = np.zeros((20, 24), dtype=np.uint8)
    a[:, 12:] = 1
    probs = np.zeros((2, 20, 24), dtype=np.float32)
    probs[0] = 0.8
    probs[1] = 0.6
    probs[1, :10, 12:] = 0.9
    src = write_raster(tmp_path / "c.tif", a)
    prob = write_raster(tmp_path / "p.tif", probs)
    got = vectorize(src, classes=["water", "land"], probabilities=prob, window=7)
    assert list(got.class_name.sort_values()) == ["land", "water"]
    land = got[got.class_id == 1].iloc[0]
    assert land.mean_prob == pytest.approx(0.75)
    assert got[got.class_id == 0].iloc[0].mean_prob == pytest.approx(0.8)
    assert land.pixels == 240 and land.area == pytest.approx(24000.0) and land.area_m2 == pytest.approx(24000.0)
    assert got.crs == CRS.from_epsg(32633)


def test_geographic_area_m2(tmp_path: Path) -> None:
    a = np.ones((10, 10), dtype=np.uint8)
    src = write_raster(tmp_path / "g.tif", a, crs="EPSG:4326", transform=Affine(0.001, 0, 10.0, 0, -0.001, 45.0))
    got = vectorize(src, window=4)
    assert len(got) == 1
    # 0.01 deg x 0.01 deg at 45N: ~787 m x 1111 m
    assert got.area_m2.iloc[0] == pytest.approx(787.0 * 1111.0, rel=0.01)
    assert got["area"].iloc[0] == pytest.approx(1e-4)


def test_min_area_simplify_and_reproject(tmp_path: Path) -> None:
    a = tricky_scene(nodata=None)
    src = write_raster(tmp_path / "c.tif", a)
    full = vectorize(src, window=16)
    big = vectorize(src, window=16, min_area=500.0)
    assert 0 < len(big) < len(full) and (big["area"] >= 500).all()
    simp = vectorize(src, window=16, simplify=10.0)
    assert (
        shapely.get_num_coordinates(simp.geometry.values).sum()
        < shapely.get_num_coordinates(full.geometry.values).sum()
    )
    geo = vectorize(src, window=16, crs="EPSG:4326")
    assert geo.crs == CRS.from_epsg(4326)
    assert geo.total_bounds[0] == pytest.approx(15.0, abs=0.1)


def test_a_raster_across_the_antimeridian_is_not_torn_across_the_world(tmp_path: Path) -> None:
    """Reprojected into a CRS cut at 180° longitude (Web Mercator, WGS 84), its polygons would span the globe:
    refused, naming the fix; into a CRS that spans 180° (the UTM zone there) they are right."""
    classes = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) % 3, np.ones((32, 32), np.uint8))
    geographic = write_raster(tmp_path / "geo.tif", classes, crs="EPSG:4326",
                              transform=Affine(0.001, 0, 179.95, 0, -0.001, -16.0))  # runs to 180.078  # fmt: skip
    with pytest.raises(InvalidParameterError, match=r"geo\.tif crosses the antimeridian \(180° longitude\) and "
                       r"EPSG:3857 is cut there: .* omit crs to keep the raster's CRS"):  # fmt: skip
        vectorize(geographic, tmp_path / "v.gpkg", crs="EPSG:3857")
    assert not (tmp_path / "v.gpkg").exists()
    utm = vectorize(geographic, crs="EPSG:32660")
    minx, _, maxx, _ = utm.total_bounds
    assert 0 < maxx - minx < 20_000  # 128 px of 0.001° (~107 m) is about 14 km wide
    assert utm.geometry.is_valid.all()
    at_180 = Affine(100, 0, 824_000, 0, -100, 1_000_000)  # 9°N: 180° is at x 830 km, inside the 12.8 km
    projected = write_raster(tmp_path / "utm.tif", classes, crs="EPSG:32660", transform=at_180)
    with pytest.raises(InvalidParameterError, match=r"crosses the antimeridian .* EPSG:4326 is cut there"):
        vectorize(projected, crs="EPSG:4326")
    assert len(vectorize(projected, crs="EPSG:32601")) == len(vectorize(projected))
    away = write_raster(tmp_path / "away.tif", classes, crs="EPSG:32660",
                        transform=Affine(100, 0, 400_000, 0, -100, 1_000_000))  # fmt: skip
    assert vectorize(away, crs="EPSG:4326").total_bounds[2] < 180


@pytest.mark.parametrize("ext", sorted(VECTOR_FORMATS))
def test_output_formats(tmp_path: Path, ext: str) -> None:
    a = tricky_scene()
    src = write_raster(tmp_path / "c.tif", a, nodata=255)
    out = tmp_path / f"polys{ext}"
    res = vectorize(src, out, window=16, connectivity=8)
    assert res.path == out and out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    back = gpd.read_parquet(out) if res.driver == "GeoParquet" else gpd.read_file(out)
    ref = reference(a, TRANSFORM, 8, 255)
    assert len(back) == res.features == len(ref)
    assert back.crs.to_epsg() == 32633
    assert np.isclose(back.geometry.area.sum(), ref.geometry.area.sum())
    assert set(back.columns) >= {"class_id", "class_name", "area", "area_m2", "pixels", "geometry"}
    with pytest.raises(OutputExistsError, match="overwrite"):
        vectorize(src, out)
    vectorize(src, out, overwrite=True)


def test_geopackage_is_version_1_2(tmp_path: Path) -> None:
    """A GeoPackage every GDAL since 2.2 reads without warning (GDAL 3.6, as in QGIS on Debian bookworm, warns three
    times per file that version 1.4 "may only be partially supported")."""
    import sqlite3

    src = write_raster(tmp_path / "c.tif", tricky_scene(), nodata=255)
    out = vectorize(src, tmp_path / "p.gpkg").path
    con = sqlite3.connect(out)
    try:
        application_id, user_version = (
            con.execute(f"PRAGMA {k}").fetchone()[0] for k in ("application_id", "user_version")
        )
    finally:
        con.close()
    assert application_id.to_bytes(4, "big") == b"GPKG" and user_version == 10200


def test_incremental_write_many_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geoseg.vectorization.polygons as v

    monkeypatch.setattr(v, "_BATCH", 10)
    a = tricky_scene()
    src = write_raster(tmp_path / "c.tif", a, nodata=255)
    for ext in (".gpkg", ".parquet", ".fgb"):
        res = vectorize(src, tmp_path / f"o{ext}", window=16)
        back = gpd.read_parquet(res.path) if ext == ".parquet" else gpd.read_file(res.path)
        assert len(back) == len(reference(a, TRANSFORM, 4, 255))


def test_batches_bounded_by_vertices_and_window_arrays_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The polygon stream's batch is bounded by vertices (one polygon beyond the budget at most), whatever the
    raster size; and while a batch is out (built and written by the caller) the stream holds no window-sized array."""
    import geoseg.vectorization.polygons as v
    from geoseg.io.read import open_dataset

    monkeypatch.setattr(v, "_BATCH_COORDS", 300)
    a = tricky_scene(rows=120, cols=130)
    src = write_raster(tmp_path / "c.tif", a, nodata=255)
    window = 32
    ds = open_dataset(src)
    try:
        stream = v.polygonize_stream(ds, window=window)
        batches = []
        for batch in stream:
            coords = [int(shapely.get_num_coordinates(b[3])) for b in batch]
            assert len(batch) <= v._BATCH and sum(coords[:-1]) < v._BATCH_COORDS
            held = [x for x in stream.gi_frame.f_locals.values() if isinstance(x, np.ndarray) and x.ndim == 2]
            assert not held, [x.shape for x in held]
            batches.append(batch)
    finally:
        ds.close()
    assert len(batches) > 3  # the budget, not the raster, decided when batches went out
    total = sum(int(shapely.get_num_coordinates(b[3])) for batch in batches for b in batch)
    assert total > 3 * v._BATCH_COORDS
    assert sum(len(b) for b in batches) == len(reference(a, TRANSFORM, 4, 255))


def test_all_nodata_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    """An empty polygon file would look like a result: a class raster without a valid pixel is refused instead."""
    src = write_raster(tmp_path / "c.tif", np.full((10, 10), 255, dtype=np.uint8), nodata=255)
    with pytest.raises(NoValidDataError, match=r"c\.tif holds no valid pixel .*nothing to vectorize"):
        vectorize(src)
    with pytest.raises(NoValidDataError, match="holds no valid pixel"):
        vectorize(src, tmp_path / "e.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"]


def test_errors(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "c.tif", np.zeros((8, 8), dtype=np.uint8))
    for name in ("x.png", "x.kml", "x"):
        with pytest.raises(InvalidParameterError, match=r"unsupported vector output format .*\.gpkg.*\.shp"):
            vectorize(src, tmp_path / name)
    with pytest.raises(InvalidParameterError, match="connectivity must be 4 or 8"):
        vectorize(src, connectivity=6)
    with pytest.raises(GeoSegError, match="not found"):
        vectorize(tmp_path / "missing.tif")
    src2 = write_raster(tmp_path / "c2.tif", np.full((8, 8), 2, dtype=np.uint8))
    prob = write_raster(tmp_path / "p2.tif", np.zeros((2, 8, 8), dtype=np.float32))
    with pytest.raises(InvalidParameterError, match="one band per class"):
        vectorize(src2, probabilities=prob)
    with pytest.raises(InvalidParameterError, match="not on the grid"):
        vectorize(src, probabilities=write_raster(tmp_path / "p3.tif", np.zeros((2, 9, 8), dtype=np.float32)))


def test_cancel_leaves_nothing(tmp_path: Path) -> None:
    from geoseg.errors import CancelledError

    src = write_raster(tmp_path / "c.tif", tricky_scene(), nodata=255)
    out = tmp_path / "o.gpkg"
    with pytest.raises(CancelledError):
        vectorize(src, out, window=16, progress=lambda d, t, m="": d >= 3)
    assert list(tmp_path.iterdir()) == [src]


def test_no_torch_import() -> None:
    code = (
        "import geoseg.vectorization.pipeline, geoseg.evaluation, geoseg.report, geoseg.metrics, "
        "geoseg.cli.vectorize_cmd, geoseg.cli.evaluate_cmd; import sys; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_vectorize(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli.vectorize_cmd import vectorize_command

    src = write_raster(tmp_path / "c.tif", tricky_scene(), nodata=255)
    out = tmp_path / "o.geojson"
    r = CliRunner().invoke(
        vectorize_command, [str(src), str(out), "--connectivity", "8", "--min-area", "100", "--classes", "a,b,c,d"]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert {f["properties"]["class_name"] for f in data["features"]} <= {"a", "b", "c", "d"}
    r = CliRunner().invoke(vectorize_command, [str(src), str(tmp_path / "o.txt")])
    assert r.exit_code == 2 and "Error: unsupported vector output format" in r.output


def test_not_georeferenced(tmp_path: Path) -> None:
    import warnings

    a = np.zeros((12, 12), dtype=np.uint8)
    a[2:6, 2:6] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = write_raster(tmp_path / "c.tif", a, crs=None, transform=None)
        got = vectorize(src, window=5)
    assert got.crs is None and got["area_m2"].isna().all()
    assert sorted(got["area"]) == [16.0, 128.0]
    with pytest.raises(InvalidParameterError, match="has no CRS"):
        vectorize(src, crs="EPSG:4326")
