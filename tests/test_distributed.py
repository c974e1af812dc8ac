"""run_batch / geoseg batch: regions mosaic to the single-machine prediction, resume, worker loss, reports."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import rasterio
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

pytest.importorskip("distributed")

from geoseg.distributed import (  # noqa: E402
    ManifestError,
    NoInputsError,
    SchedulerUnreachableError,
    make_client,
    read_jobs_manifest,
    resolve_jobs,
    run_batch,
)
from geoseg.distributed.manifest import MANIFEST_NAME, Manifest  # noqa: E402
from geoseg.distributed.regions import plan_regions  # noqa: E402
from geoseg.errors import (  # noqa: E402
    InputNotFoundError,
    InvalidParameterError,
    MissingDependencyError,
    OutputExistsError,
)
from geoseg.tiling import TileGrid  # noqa: E402

REGION = 48  # 2x2 tiles of 24-px cores: many small tasks


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def _region_bytes(out, name):
    return {p.name: p.read_bytes() for p in sorted((out / name).glob("*.tif"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    big, big_labels = class_scene(260, 230, bands=2, classes=3, seed=1)
    small, small_labels = class_scene(44, 46, bands=2, classes=3, seed=2)
    write_raster(d / "big.tif", big)
    write_raster(d / "small.tif", small)
    (d / "truth").mkdir()
    write_raster(d / "truth" / "big.tif", big_labels, nodata=255)
    write_raster(d / "truth" / "small.tif", small_labels, nodata=255)
    ck = tiny_checkpoint(d / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    return d, ck


@pytest.fixture(scope="module")
def client():
    handle = make_client("local", workers=2)
    yield handle.client
    handle.close()


@pytest.fixture(scope="module")
def reference(data, client):
    """An uninterrupted batch run (with COG and truth) and single-machine predictions of the same scenes."""
    d, ck = data
    from geoseg.inference.predict import predict_raster

    singles = {
        n: predict_raster(d / f"{n}.tif", d / f"single_{n}.tif", model=ck, device="cpu").output
        for n in ("big", "small")
    }
    calls = []
    res = run_batch(
        [str(d / "big.tif"), str(d / "small.tif")],
        model=ck,
        out_dir=d / "ref",
        client=client,
        region_size=REGION,
        device="cpu",
        cog=True,
        truth=d / "truth",
        progress=lambda done, total, msg: calls.append((done, total)) and False,
    )
    return res, singles, calls


# ---------------------------------------------------------------- no cluster needed


def test_jobs_from_lists_globs_and_manifests(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.zeros((2, 8, 8), np.float32))
    (tmp_path / "sub").mkdir()
    b = write_raster(tmp_path / "sub" / "a.tif", np.zeros((2, 8, 8), np.float32))
    t = write_raster(tmp_path / "t.tif", np.zeros((8, 8), np.uint8))
    jobs = resolve_jobs(str(tmp_path / "**" / "*.tif"))
    assert {j.src for j in jobs} == {a, b, t}
    names = [j.name for j in jobs if j.src in (a, b)]
    assert len(set(names)) == 2 and all(n.startswith("a-") for n in names)  # colliding stems made unique
    (tmp_path / "list.csv").write_text("path,truth\n# comment\n\na.tif,t.tif\nsub/a.tif\n")
    assert read_jobs_manifest(tmp_path / "list.csv") == [(a, t), (b, None)]
    jobs = resolve_jobs(str(tmp_path / "list.csv"))
    assert jobs[0].truth == t and jobs[1].truth is None
    (tmp_path / "bad.txt").write_text("a.tif\na.tif,t.tif,extra\n")
    with pytest.raises(ManifestError, match="line 2"):
        resolve_jobs(tmp_path / "bad.txt")
    (tmp_path / "missing.txt").write_text("a.tif\n\nnope.tif\n")
    with pytest.raises(InputNotFoundError, match="line 3.*nope.tif"):
        resolve_jobs(str(tmp_path / "missing.txt"))
    with pytest.raises(NoInputsError, match="no file matches"):
        resolve_jobs(str(tmp_path / "*.jp2"))
    with pytest.raises(NoInputsError):
        resolve_jobs([])
    with pytest.raises(InputNotFoundError, match="not found"):
        resolve_jobs([tmp_path / "absent.tif"])
    (tmp_path / "truths").mkdir()
    with pytest.raises(InputNotFoundError, match="no truth for a.tif"):
        resolve_jobs([a], truth=tmp_path / "truths")


def test_regions_are_whole_tiles_covering_the_grid():
    grid = TileGrid((1000, 700), 128, 32, align=8)
    regions = plan_regions(grid, 300)
    nr, nc = grid.full_grid_shape
    covered = np.zeros((nr, nc), int)
    for rows, cols in regions:
        covered[rows.start : rows.stop, cols.start : cols.stop] += 1
    assert (covered == 1).all() and len(regions) > 1
    assert plan_regions(grid, 4096) == [None]
    with pytest.raises(InvalidParameterError):
        plan_regions(grid, 0)


def test_manifest_ignores_a_torn_last_line(tmp_path):
    m = Manifest(tmp_path)
    out = tmp_path / "o.bin"
    out.write_bytes(b"x")
    from geoseg.distributed.manifest import sha256_file

    m.append({"key": "k", "sha256": sha256_file(out), "params": {"a": 1}})
    with open(tmp_path / MANIFEST_NAME, "a") as fh:
        fh.write('{"key": "k2", "sha')  # crash mid-append
    m2 = Manifest(tmp_path)
    assert m2.finished("k", out, {"a": 1}) and not m2.finished("k", out, {"a": 2}) and "k2" not in m2.records
    out.write_bytes(b"y")
    assert not m2.finished("k", out, {"a": 1})


def test_cluster_errors():
    with pytest.raises(InvalidParameterError, match="unknown cluster type 'kubernetes'"):
        make_client("kubernetes")
    t0 = time.perf_counter()
    with pytest.raises(SchedulerUnreachableError, match="tcp://127.0.0.1:9"):
        make_client(scheduler="tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 30
    for kind, module in (("slurm", "dask_jobqueue"), ("cuda", "dask_cuda")):
        try:
            __import__(module)
        except ImportError:
            with pytest.raises(MissingDependencyError, match=module):
                make_client(kind)


def test_split_scene_needs_center_stitching(data, tmp_path):
    d, ck = data
    with pytest.raises(InvalidParameterError, match="stitch='center'"):
        run_batch(
            [d / "big.tif"],
            model=ck,
            out_dir=tmp_path,
            region_size=REGION,
            stitch="mean",
            device="cpu",
            scheduler="tcp://127.0.0.1:9",
        )  # fails while planning, before any cluster is contacted
    with pytest.raises(InputNotFoundError, match="checkpoint"):
        run_batch([d / "big.tif"], model=tmp_path / "none.safetensors", out_dir=tmp_path)


# ---------------------------------------------------------------- on a real LocalCluster of 2 worker processes


def test_mosaic_equals_single_machine_prediction(data, reference):
    d, ck = data
    res, singles, calls = reference
    assert [s.name for s in res.scenes] == ["big", "small"]
    big, small = res.scenes
    assert len(big.regions) > 20 and len(small.regions) == 1
    for s in res.scenes:
        full = _read(singles[s.name])
        np.testing.assert_array_equal(_read(s.mosaic), full)
        np.testing.assert_array_equal(_read(s.cog), full)
        with rasterio.open(s.cog) as cog, rasterio.open(singles[s.name]) as ref, rasterio.open(s.mosaic) as vrt:
            assert cog.transform == ref.transform == vrt.transform and cog.crs == ref.crs == vrt.crs
            assert cog.nodata == vrt.nodata == 255
            assert cog.colormap(1)[1] == vrt.colormap(1)[1] == ref.colormap(1)[1]
            assert json.loads(vrt.tags()["geoseg_classes"]) == ["a", "b", "c"]
    assert calls[-1] == (res.tasks, res.tasks) and len(calls) == res.tasks + 1
    # throughput per worker: both worker processes took part
    assert len(res.workers) == 2 and sum(w.tasks for w in res.workers.values()) == res.tasks
    assert sum(w.pixels for w in res.workers.values()) == 260 * 230 + 44 * 46
    assert "MPix/s" in res.format_summary()
    # accuracy: per scene equals evaluating the single-machine prediction; combined = sum of matrices
    from geoseg.metrics import ConfusionMatrix

    total = np.zeros((3, 3), np.int64)
    for s in res.scenes:
        cm = ConfusionMatrix(3)
        cm.update(_read(singles[s.name])[0], _read(d / "truth" / f"{s.name}.tif")[0])
        np.testing.assert_array_equal(s.report.matrix, cm.matrix)
        total += cm.matrix
    np.testing.assert_array_equal(res.report.matrix, total)
    summary = json.loads(res.summary.read_text())
    assert summary["report"]["pixels"] == 260 * 230 + 44 * 46 and len(summary["workers"]) == 2


def test_rerun_resumes_and_repairs(data, reference, tmp_path):
    d, ck = data
    res, _, _ = reference
    out = res.manifest.parent
    before = _region_bytes(out, "big")
    cog_bytes = res.scenes[0].cog.read_bytes()
    # everything finished: no cluster is contacted (the scheduler address is unreachable)
    again = run_batch(
        [d / "big.tif", d / "small.tif"],
        model=ck,
        out_dir=out,
        region_size=REGION,
        device="cpu",
        cog=True,
        scheduler="tcp://127.0.0.1:9",
    )
    assert again.skipped == again.tasks == res.tasks
    assert res.scenes[0].cog.read_bytes() == cog_bytes
    # a lost and a corrupted region are recomputed, byte-identical
    names = sorted(before)
    (out / "big" / names[0]).unlink()
    (out / "big" / names[5]).write_bytes(b"garbage")
    again = run_batch(
        [d / "big.tif", d / "small.tif"],
        model=ck,
        out_dir=out,
        region_size=REGION,
        device="cpu",
        cog=True,
        workers=1,
        cluster_kwargs={"n_workers": 1},
    )
    assert again.tasks - again.skipped == 2
    assert _region_bytes(out, "big") == before
    assert res.scenes[0].cog.read_bytes() == cog_bytes
    # other options into the same folder: refused without overwrite
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_batch(
            [d / "big.tif"],
            model=ck,
            out_dir=out,
            region_size=REGION,
            overlap=16,
            device="cpu",
            scheduler="tcp://127.0.0.1:9",
        )


def test_killing_a_worker_loses_nothing(data, reference, client, tmp_path):
    d, ck = data
    res, singles, _ = reference
    killed = {}

    def kill_one(done, total, message):
        if done == 3 and not killed:
            pids = client.run(os.getpid)
            busy = [a for a, tasks in client.processing().items() if tasks and a in pids]
            addr = busy[0] if busy else next(iter(pids))
            killed["addr"], killed["busy"] = addr, bool(busy)
            os.kill(pids[addr], signal.SIGKILL)
        return False

    out = tmp_path / "killed"
    run = run_batch(
        [d / "big.tif"], model=ck, out_dir=out, client=client, region_size=REGION, device="cpu", progress=kill_one
    )
    assert killed and killed["busy"], "no worker was processing a task when killed"
    assert _region_bytes(out, "big") == _region_bytes(res.manifest.parent, "big")
    np.testing.assert_array_equal(_read(run.scenes[0].mosaic), _read(singles["big"]))
    assert not list((out / "big").glob(".*partial*"))
    lines = [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines()]
    assert sum(1 for r in lines if r["kind"] == "task" and r["state"] == "done") == run.tasks


def test_batch_cli(data, reference, client, tmp_path):
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    d, ck = data
    (tmp_path / "jobs.csv").write_text(f"{d / 'small.tif'},{d / 'truth' / 'small.tif'}\n")
    args = [
        "batch",
        "--manifest",
        str(tmp_path / "jobs.csv"),
        "--model",
        str(ck),
        "--out-dir",
        str(tmp_path / "o"),
        "--scheduler",
        client.scheduler.address,
        "--device",
        "cpu",
        "--progress",
        "bar",  # the dashboard address is shown with the progress bar
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "Dask dashboard: http" in r.output and "mIoU" in r.output and "MPix/s" in r.output
    np.testing.assert_array_equal(_read(tmp_path / "o" / "small.vrt"), _read(reference[1]["small"]))
    r = CliRunner().invoke(cli, ["batch", str(tmp_path / "*.nothing"), "--model", str(ck), "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and "no file matches" in r.output
    r = CliRunner().invoke(cli, ["batch", "--model", str(ck), "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and "no inputs" in r.output
