"""The README's first command: the demo trains briefly, predicts, vectorizes and reports IoU."""

import geopandas as gpd
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["demo", "--out", str(out), "--device", "cpu"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "[5/5] per-class IoU" in res.output
    miou = float(res.output.split("mIoU ")[1].split()[0])
    assert miou >= 0.8, res.output
    for name in ("scene.tif", "labels.tif", "model.safetensors", "classes.tif", "probabilities.tif", "classes.gpkg"):
        assert (out / name).exists(), name
    with rasterio.open(out / "classes.tif") as ds, rasterio.open(out / "scene.tif") as src:
        assert ds.crs == src.crs and ds.transform == src.transform
        arr = ds.read(1)
        assert arr[0, -1] == 255  # the nodata corner stays nodata
    polys = gpd.read_file(out / "classes.gpkg")
    assert polys.crs == "EPSG:32633" and set(polys["class_name"]) <= {
        "water",
        "forest",
        "cropland",
        "urban",
        "bare_soil",
    }
    assert (out / "report").is_dir() and any((out / "report").iterdir())
