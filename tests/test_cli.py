import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

from geoseg.cli.main import cli


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_models_and_info(tmp_path):
    res = _run("models")
    assert res.exit_code == 0 and "unet" in res.output and "deeplabv3" in res.output and "fcn8s" in res.output
    data, _ = class_scene(20, 30, bands=3)
    src = write_raster(tmp_path / "in.tif", data, descriptions=["red", "green", "nir"], nodata=-1)
    res = _run("info", src)
    assert res.exit_code == 0 and "30 x 20 px, 3 band(s)" in res.output and "EPSG:32633" in res.output
    assert "nir" in res.output
    info = json.loads(_run("info", src, "--json").output)
    assert info["bands"][2]["name"] == "nir" and info["crs"] == "EPSG:32633"
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["red", "green", "nir"])
    res = _run("info", ck)
    assert "bands     3: red, green, nir" in res.output and "classes   3: a, b, c" in res.output


def test_predict_writes_class_map_and_reports(tmp_path):
    data, _ = class_scene(64, 48, bands=2)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"])
    out = tmp_path / "out.tif"
    res = _run(
        "predict", src, out, "-m", ck, "--device", "cpu", "--progress", "none", "--probabilities", tmp_path / "p.tif"
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and out.exists() and (tmp_path / "p.tif").exists()
    with rasterio.open(out) as ds:
        assert ds.shape == (64, 48) and set(np.unique(ds.read(1))) <= {0, 1, 2}


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    data, _ = class_scene(16, 16, bands=2)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"])
    runner = CliRunner()
    res = runner.invoke(cli, ["predict", str(tmp_path / "missing.tif"), str(tmp_path / "o.tif"), "-m", str(ck)])
    assert res.exit_code == 2 and "Error: input raster not found" in res.output
    res = runner.invoke(cli, ["predict", str(src), str(tmp_path / "o.tif"), "-m", str(ck), "--bands", "1,2,3"])
    assert res.exit_code == 2 and "band index 3 is out of range" in res.output or "model expects 2" in res.output
    (tmp_path / "exists.tif").write_bytes(b"x")
    res = runner.invoke(cli, ["predict", str(src), str(tmp_path / "exists.tif"), "-m", str(ck), "--device", "cpu"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (tmp_path / "exists.tif").read_bytes() == b"x"
    res = runner.invoke(cli, ["predict", str(src), str(tmp_path / "o.tif"), "-m", str(ck), "--tile", "7"])
    assert res.exit_code == 2 and "multiple of the model stride 2" in res.output
    assert "Traceback" not in res.output


def test_json_progress_lines(tmp_path):
    data, _ = class_scene(64, 64, bands=2)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    res = CliRunner().invoke(
        cli, ["predict", str(src), str(tmp_path / "o.tif"), "-m", str(ck), "--device", "cpu", "--progress", "json"]
    )
    assert res.exit_code == 0
    lines = [json.loads(x) for x in res.stderr.splitlines() if x.startswith("{")]
    assert lines[0]["done"] == 0 and lines[-1]["progress"] == 1.0


@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".shp", ".fgb", ".parquet"])
def test_predict_vector_writes_every_polygon_format_with_its_own_layer_name(tmp_path, ext):
    """predict --vector stages the polygon file under a temporary name: the layer is still named after the file."""
    import pyogrio

    data, _ = class_scene(64, 64, bands=2)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    vec = tmp_path / f"polys{ext}"
    res = CliRunner().invoke(cli, ["predict", str(src), str(tmp_path / "o.tif"), "-m", str(ck), "--device", "cpu",
                                   "--vector", str(vec), "--progress", "none"])  # fmt: skip
    assert res.exit_code == 0, res.output
    if ext != ".parquet":
        assert [str(n) for n, _ in pyogrio.list_layers(vec)] == ["polys"]
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial" in p.name) == []


def test_a_closed_stdout_ends_the_command_quietly(tmp_path):
    """`geoseg info x.tif | head -1`: the reader closes the pipe before geoseg writes; no 'Error: Broken pipe'."""
    src = write_raster(tmp_path / "in.tif", class_scene(16, 16, bands=2)[0])
    proc = subprocess.Popen([sys.executable, "-m", "geoseg", "info", str(src)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    proc.stdout.close()  # no reader left: the command's first write fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_json_progress_makes_every_stderr_line_json(tmp_path):
    """With --progress json a program reading stderr gets JSON only: warnings and errors as {"warning"|"error": ...},
    also for a usage error click finds before the command runs."""
    data, labels = class_scene(64, 64, bands=2)
    src = write_raster(tmp_path / "in.tif", data)
    lab = write_raster(tmp_path / "lab.tif", labels[None].astype("uint8"), nodata=255)
    args = ["train", src, lab, tmp_path / "m.safetensors", "--arch", "tiny", "--epochs", "1", "--device", "cpu",
            "--classes", "a,b,c,unseen", "--progress", "json"]  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stderr.splitlines() if x.strip()]  # each line parses
    assert any("unseen" in line.get("warning", "") for line in lines)
    assert lines[-1]["progress"] == 1.0
    bad = ["predict", src, tmp_path / "o.tif", "-m", tmp_path / "missing.safetensors", "--progress", "json"]
    res = subprocess.run([sys.executable, "-m", "geoseg", *map(str, bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert [json.loads(x) for x in res.stderr.splitlines()] == [
        {"error": f"checkpoint not found: {tmp_path / 'missing.safetensors'}"}
    ]
    usage = ["predict", src, tmp_path / "o.tif", "--bogus", "--progress=json"]
    res = subprocess.run([sys.executable, "-m", "geoseg", *map(str, usage)], capture_output=True, text=True)
    assert res.returncode == 2 and "--bogus" in json.loads(res.stderr)["error"]
    plain = subprocess.run([sys.executable, "-m", "geoseg", *map(str, bad[:-2])], capture_output=True, text=True)
    assert plain.stderr.startswith("Error: checkpoint not found")


def test_json_results_of_the_commands_other_programs_call(tmp_path):
    """predict, vectorize, evaluate and train print one JSON object with --json (the QGIS plugin reads it); without
    --json their text is unchanged; an error with --json is a JSON object too."""
    data, labels = class_scene(64, 64, bands=2)
    src = write_raster(tmp_path / "in.tif", data)
    truth = write_raster(tmp_path / "truth.tif", labels[None].astype("uint8"), nodata=255)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    out = tmp_path / "o.tif"
    args = ["predict", src, out, "-m", ck, "--device", "cpu", "--progress", "none"]
    text = _run(*args).output
    assert text.startswith("predicted ") and "MPix/s on cpu" in text and f"wrote {out}\n" in text
    res = _run(*args, "--overwrite", "--json", "--vector", tmp_path / "v.gpkg", "--truth", truth)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)  # one JSON object, nothing else on stdout
    assert result["output"] == str(out) and result["device"] == "cpu" and result["tiles"] >= 1
    assert result["legend"]["classes"] == ["a", "b", "c"] and result["legend"]["nodata"] == 255
    assert result["model"] == {"arch": "tiny", "bands": ["1", "2"]}
    assert result["vector"]["output"] == str(tmp_path / "v.gpkg") and result["vector"]["features"] > 0
    assert 0.0 <= result["report"]["miou"] <= 1.0
    vec = json.loads(_run("vectorize", out, tmp_path / "w.fgb", "--json", "--progress", "none").stdout)
    assert vec["driver"] == "FlatGeobuf" and vec["features"] == result["vector"]["features"]
    ev = json.loads(_run("evaluate", out, truth, "--json", "--report-dir", tmp_path / "r", "--progress", "none").stdout)
    assert ev["report"]["miou"] == result["report"]["miou"] and set(ev["files"]) == {"json", "csv", "md", "html"}
    tr = _run(
        "train", src, truth, tmp_path / "t.safetensors", "--arch", "tiny", "--epochs", "1", "--chip", "16",
        "--chips-per-epoch", "4", "--batch-size", "4", "--device", "cpu", "--progress", "none", "--json",
        "--self-training", "1",
    )  # fmt: skip
    trained = json.loads(tr.stdout)
    assert trained["output"] == str(tmp_path / "t.safetensors") and trained["best_epoch"] in (1, 2)
    assert trained["state"].endswith(".train-state.pt")
    # every pixel has a real label: nothing to pseudo-label, so the round is skipped, in one line on stderr
    assert [h["round"] for h in trained["history"]] == [0]
    assert "self-training round 1: nothing to pseudo-label: every valid pixel outside the validation" in tr.stderr
    err = CliRunner().invoke(cli, [str(a) for a in args + ["--json"]])  # the output exists now
    assert err.exit_code == 2 and "already exists" in err.stderr
    assert json.loads(err.stdout) == {"error": json.loads(err.stdout)["error"], "type": "OutputExistsError"}


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--json", "--pseudo-threshold", "abc", "a.tif", "b.tif", "m.safetensors"],  # not a number
        ["train", "a.tif", "b.tif", "m.safetensors", "--self-training", "1.5", "--json"],  # not an integer
        ["predict", "--json", "a.tif", "o.tif", "--model", "m.safetensors", "--stitch", "zzz"],  # not a choice
        ["evaluate", "--json", "--no-such-option", "a.tif", "b.tif"],  # unknown option
    ],
)
def test_usage_errors_with_json_print_one_json_object_too(args) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("Error: ")
    err = json.loads(res.stdout)  # one JSON object, nothing else on stdout
    assert err["error"] == res.stderr.strip().removeprefix("Error: ") and err["type"]
