"""geoseg batch as a cluster user runs it: inputs never lost, scenes failing alone, one run per folder, crashes
between finishing steps, scheduler and worker loss (real `dask scheduler` / `dask worker` processes), GPU pinning,
job-queue options, worker threads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

pytest.importorskip("distributed")

from geoseg.distributed import (  # noqa: E402
    BatchTaskError,
    NoWorkersError,
    SchedulerLostError,
    gpu_worker_envs,
    make_client,
    parse_cluster_options,
    run_batch,
    visible_gpus,
)
from geoseg.distributed.cluster import (  # noqa: E402
    available_cpus,
    cgroup_cpu_limit,
    requests_gpus,
    torch_threads_per_task,
)
from geoseg.distributed.manifest import MANIFEST_NAME, Manifest, sha256_file  # noqa: E402
from geoseg.distributed.run import LOCK_NAME, SUMMARY_NAME, _decide_gpu, _task_device  # noqa: E402
from geoseg.errors import InvalidParameterError, OutputError, OutputExistsError, OutputLockedError  # noqa: E402

REGION = 48  # 2x2 tiles of 24-px cores
UNREACHABLE = "tcp://127.0.0.1:9"  # a run that needs no computing never contacts it


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def _lines(out):
    return [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    big, big_labels = class_scene(140, 130, bands=2, classes=3, seed=1)
    small, small_labels = class_scene(44, 46, bands=2, classes=3, seed=2)
    write_raster(d / "big.tif", big)
    write_raster(d / "small.tif", small)
    (d / "truth").mkdir()
    write_raster(d / "truth" / "big.tif", big_labels, nodata=255)
    write_raster(d / "truth" / "small.tif", small_labels, nodata=255)
    ck = tiny_checkpoint(d / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    from geoseg.inference.predict import predict_raster

    singles = {
        n: _read(predict_raster(d / f"{n}.tif", d / f"single_{n}.tif", model=ck, device="cpu").output)
        for n in ("big", "small")
    }
    return d, ck, singles


@pytest.fixture(scope="module")
def client():
    handle = make_client("local", workers=2)
    yield handle.client
    handle.close()


# ------------------------------------------------------------------ real scheduler and worker processes


@contextlib.contextmanager
def dask_scheduler(folder: Path):
    """A `dask scheduler` process on loopback (random port); yields (process, address)."""
    sf = folder / f"scheduler-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    proc = subprocess.Popen([*cmd, "--scheduler-file", str(sf)], stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (sf.exists() and sf.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        yield proc, json.loads(sf.read_text())["address"]
    finally:
        _kill(proc)


def dask_worker(address: str) -> subprocess.Popen:
    """A `dask worker` process (nanny + worker, 1 thread) in its own process group."""
    cmd = [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-dashboard"]
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL, start_new_session=True)


def _joined(address: str, n: int = 1) -> None:
    """Block until ``n`` workers have joined the scheduler at ``address``."""
    from distributed import Client

    with Client(address, timeout=60) as c:
        c.wait_for_workers(n, timeout=120)


def _read_until(stream, text: str, timeout: float) -> str | None:
    """What ``stream`` (a pipe) printed up to ``text`` (None at EOF or after ``timeout`` seconds)."""
    import select

    deadline = time.monotonic() + timeout
    seen = b""
    fd = stream.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            seen += chunk
            if text.encode() in seen:
                return seen.decode(errors="replace")
    return None


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# ------------------------------------------------------------------ 1. no output replaces an input


def test_no_output_replaces_an_input(data, tmp_path):
    d, ck, _ = data
    folder = tmp_path / "scenes"
    folder.mkdir()
    scene = folder / "s.tif"
    scene.write_bytes((d / "small.tif").read_bytes())
    before = scene.read_bytes()
    # the COG is named after the scene: writing into the scene's own folder would replace it, with or without
    # --overwrite; the refusal names the real reason (before any cluster is contacted)
    for overwrite in (True, False):
        with pytest.raises(OutputError, match=r"COG of s .*s\.tif is the input raster; inputs are never overwritten"):
            run_batch([scene], model=ck, out_dir=folder, cog=True, overwrite=overwrite, scheduler=UNREACHABLE)
    # through a symlinked output folder, and into a folder holding a hard link of the scene
    (tmp_path / "linked").symlink_to(folder)
    with pytest.raises(OutputError, match="COG of s .* is the input raster"):
        run_batch([scene], model=ck, out_dir=tmp_path / "linked", cog=True, overwrite=True, scheduler=UNREACHABLE)
    (tmp_path / "hard").mkdir()
    os.link(scene, tmp_path / "hard" / "s.tif")
    with pytest.raises(OutputError, match=r"COG of s .*hard/s\.tif is the input raster .*\(a hard link to it\)"):
        run_batch([scene], model=ck, out_dir=tmp_path / "hard", cog=True, overwrite=True, scheduler=UNREACHABLE)
    # the VRT mosaic of a VRT scene
    vrt_dir = tmp_path / "vrt"
    vrt_dir.mkdir()
    rasterio.shutil.copy(str(scene), str(vrt_dir / "v.vrt"), driver="VRT")
    with pytest.raises(OutputError, match=r"VRT mosaic of v .*v\.vrt is the input raster"):
        run_batch([vrt_dir / "v.vrt"], model=ck, out_dir=vrt_dir, overwrite=True, scheduler=UNREACHABLE)
    # a region file (a one-region scene is <out>/<name>/scene.tif), a truth raster, a jobs manifest
    (tmp_path / "r" / "scene").mkdir(parents=True)
    region_scene = tmp_path / "r" / "scene" / "scene.tif"
    region_scene.write_bytes(before)
    with pytest.raises(OutputError, match=r"region file of scene .*scene\.tif is the input raster"):
        run_batch([region_scene], model=ck, out_dir=tmp_path / "r", overwrite=True, scheduler=UNREACHABLE)
    truth = tmp_path / "t" / "s.tif"
    truth.parent.mkdir()
    truth.write_bytes((d / "truth" / "small.tif").read_bytes())
    with pytest.raises(OutputError, match=r"COG of s .* is the truth raster of s"):
        run_batch([scene], model=ck, out_dir=truth.parent, truth=truth.parent, cog=True, scheduler=UNREACHABLE)
    jobs = tmp_path / "j" / "geoseg-batch-summary.json.csv"
    jobs.parent.mkdir()
    jobs.write_text(f"{scene}\n")
    (jobs.parent / SUMMARY_NAME).symlink_to(jobs)
    with pytest.raises(OutputError, match="summary .* is the jobs manifest"):
        run_batch([jobs], model=ck, out_dir=jobs.parent, scheduler=UNREACHABLE)
    assert scene.read_bytes() == before and region_scene.read_bytes() == before
    assert not (folder / MANIFEST_NAME).exists() and not (folder / LOCK_NAME).exists()
    # the CLI: exit status 2, one line that says why
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    r = CliRunner().invoke(
        cli, ["batch", str(scene), "-m", str(ck), "-o", str(folder), "--cog", "--overwrite", "--progress", "none"]
    )
    assert r.exit_code == 2 and "is the input raster" in r.output and scene.read_bytes() == before


# ------------------------------------------------------------------ 2. crash between two finishing steps


def test_a_finishing_step_killed_before_its_record_is_redone(data, client, tmp_path):
    d, ck, singles = data
    out = tmp_path / "o"
    kw = {"model": ck, "out_dir": out, "region_size": REGION, "device": "cpu", "cog": True}
    first = run_batch([d / "small.tif"], client=client, **kw)
    lines = _lines(out)
    # the driver is killed right after the VRT was renamed into place, before its "done" record: the manifest ends
    # with the VRT's "writing" record; the COG's temporaries (GDAL's overview file too) are left behind
    cut = next(i for i, r in enumerate(lines) if r["key"] == "file:small.vrt" and r["state"] == "writing")
    (out / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines[: cut + 1]))
    (out / "small.tif").unlink()  # the COG step had not started
    stale = [out / ".small.tif.k3j2h1g0.partial.tif", out / ".small.tif.k3j2h1g0.partial.tif.ovr.tmp"]
    stale.append(out / "small" / ".scene.tif.ab12cd34.partial.tif")
    for p in stale:
        p.write_bytes(b"left by a killed run")
    foreign = out / ".notes.txt.partial"  # not derived from an output of this batch: kept
    foreign.write_text("mine")
    again = run_batch([d / "small.tif"], scheduler=UNREACHABLE, **kw)  # nothing to compute: no cluster needed
    assert again.skipped == again.tasks == first.tasks
    np.testing.assert_array_equal(_read(out / "small.vrt"), singles["small"])
    np.testing.assert_array_equal(_read(out / "small.tif"), singles["small"])
    assert not any(p.exists() for p in stale) and foreign.read_text() == "mine"
    m = Manifest(out)
    assert m.file_done(out / "small.vrt", m.records["file:small.vrt"]["config"]) is not None
    assert m.records["file:small.tif"]["sha256"] == sha256_file(out / "small.tif")
    assert m.records[f"file:{SUMMARY_NAME}"]["state"] == "done"
    # a torn last line followed by a new append: the new record starts on its own line and is kept
    with open(out / MANIFEST_NAME, "a") as fh:
        fh.write('{"kind": "task", "key": "torn')
    m.append({"kind": "note", "key": "after-torn"})
    text = (out / MANIFEST_NAME).read_text().splitlines()
    assert text[-2] == '{"kind": "task", "key": "torn' and json.loads(text[-1])["key"] == "after-torn"
    assert "after-torn" in Manifest(out).records


# ------------------------------------------------------------------ 3. scenes fail alone


def test_scenes_fail_alone_and_are_all_reported(data, client, tmp_path):
    d, ck, singles = data
    good = tmp_path / "good"
    good.mkdir()
    for i in range(4):
        img, _ = class_scene(36 + 4 * i, 40, bands=2, classes=3, seed=10 + i)
        write_raster(good / f"g{i}.tif", img)
    (good / "notes.tif").write_text("not a raster")
    # read failures on the worker: a raster whose header is fine but whose pixel blocks are garbage
    broken = tmp_path / "broken.tif"
    img, _ = class_scene(64, 64, bands=2, classes=3, seed=5)
    write_raster(broken, img, tiled=True, blockxsize=32, blockysize=32, compress="deflate")
    with rasterio.open(broken) as ds:
        offsets = [int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=1)) for i in range(2) for j in range(2)]
    raw = bytearray(broken.read_bytes())
    for off in offsets:
        raw[off : off + 64] = b"\xff" * 64
    broken.write_bytes(bytes(raw))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"{d / 'small.tif'},{tmp_path / 'nope-truth.tif'}\n{tmp_path / 'missing.tif'}\n{broken}\n")
    out = tmp_path / "out"
    with pytest.raises(BatchTaskError, match=r"4 of 8 scene\(s\) failed") as info:
        run_batch([str(good / "*.tif"), jobs], model=ck, out_dir=out, client=client, device="cpu", retries=0, cog=True)
    res = info.value.result
    failed = {f.name: f for f in res.failed}
    assert set(failed) == {"small", "missing", "notes", "broken"}
    assert failed["small"].stage == "input" and "truth not found" in failed["small"].reason
    assert failed["missing"].stage == "input" and "raster not found" in failed["missing"].reason
    assert failed["notes"].stage == "plan" and "notes.tif" in failed["notes"].reason
    assert failed["broken"].stage == "compute" and "failed after 0 retries" in failed["broken"].reason
    assert sorted(s.name for s in res.scenes) == ["g0", "g1", "g2", "g3"]
    for s in res.scenes:
        assert s.cog.is_file() and _read(s.cog).shape[1:] == _read(good / f"{s.name}.tif").shape[1:]
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert {f["name"]: f["stage"] for f in summary["failed"]} == {k: v.stage for k, v in failed.items()}
    assert "FAILED broken" in res.format_summary() and "FAILED notes" in res.format_summary()
    # the CLI prints the summary (text or JSON) with every failure and exits with status 1
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    args = ["batch", str(good / "*.tif"), str(jobs), "-m", str(ck), "-o", str(out), "--device", "cpu"]
    args += ["--scheduler", client.scheduler.address, "--retries", "0", "--progress", "none", "--cog"]
    r = CliRunner().invoke(cli, [*args, "--json"])
    assert r.exit_code == 1, r.output
    payload = json.loads(r.stdout)
    assert sorted(f["name"] for f in payload["failed"]) == ["broken", "missing", "notes", "small"]
    assert payload["skipped"] == payload["tasks"] - 1  # only the broken scene's task ran again
    assert "Error: 4 of 8 scene(s) failed" in r.stderr
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "FAILED missing" in r.stdout and "raster not found" in r.stdout
    # when no scene can even start, it is a bad input: exit status 2
    r = CliRunner().invoke(cli, ["batch", str(tmp_path / "missing.tif"), "-m", str(ck), "-o", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "input raster not found" in r.stderr


# ------------------------------------------------------------------ 4. one run per output folder


def test_a_second_run_on_the_same_folder_is_refused(data, client, tmp_path):
    d, ck, singles = data
    out = tmp_path / "o"
    with dask_scheduler(tmp_path) as (_, address):
        # run 1 holds the folder while it waits for workers on a scheduler that has none
        cmd = [sys.executable, "-m", "geoseg", "batch", str(d / "small.tif"), "-m", str(ck), "-o", str(out)]
        cmd += ["--scheduler", address, "--device", "cpu", "--worker-timeout", "120", "--progress", "none"]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # it holds the lock and says why it waits
            said = _read_until(first.stderr, f"waiting for Dask workers to join the scheduler at {address}", 120)
            assert said and (out / LOCK_NAME).exists()
            with pytest.raises(OutputLockedError, match=rf"in use by another geoseg batch run .*pid {first.pid}"):
                run_batch([d / "small.tif"], model=ck, out_dir=out, client=client, device="cpu")
            assert (out / LOCK_NAME).exists() and json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
        finally:
            first.send_signal(signal.SIGKILL)  # the owner dies without cleaning up: its lock is stale
            first.communicate(timeout=30)
    assert (out / LOCK_NAME).exists()
    messages = []
    res = run_batch([d / "small.tif"], model=ck, out_dir=out, client=client, device="cpu", on_message=messages.append)
    assert any("took over the stale lock" in m and f"pid {first.pid}" in m for m in messages)
    np.testing.assert_array_equal(_read(res.scenes[0].mosaic), singles["small"])
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ 6. another configuration into the same folder


def test_overwrite_with_another_configuration_removes_the_old_one(data, client, tmp_path):
    d, ck, singles = data
    out = tmp_path / "o"
    run_batch([d / "big.tif"], model=ck, out_dir=out, client=client, region_size=REGION, device="cpu", cog=True)
    old = sorted((out / "big").glob("*.tif"))
    assert len(old) >= 9 and (out / "big.tif").is_file()
    before = {p.name: p.read_bytes() for p in old}
    with pytest.raises(OutputExistsError, match="another configuration .*overwrite=True"):
        run_batch([d / "big.tif"], model=ck, out_dir=out, region_size=96, device="cpu", scheduler=UNREACHABLE)
    assert {p.name: p.read_bytes() for p in sorted((out / "big").glob("*.tif"))} == before
    messages = []
    res = run_batch(
        [d / "big.tif"],
        model=ck,
        out_dir=out,
        client=client,
        region_size=96,
        device="cpu",
        overwrite=True,
        on_message=messages.append,
    )
    new = sorted((out / "big").glob("*.tif"))
    assert sorted(new) == sorted(res.scenes[0].regions) and len(new) < len(old)
    assert not (out / "big.tif").exists()  # the old COG went with its configuration
    np.testing.assert_array_equal(_read(out / "big.vrt"), singles["big"])
    recorded = {r.get("output") for r in Manifest(out).records.values() if r.get("scene") == "big"}
    assert recorded == {f"big/{p.name}" for p in new} | {"big.vrt"}
    assert any("removed" in m for m in messages)
    # a file no batch run recorded is not replaced silently
    (out / "small.vrt").write_text("someone's own file")
    with pytest.raises(OutputExistsError, match=r"small\.vrt exists but was not written by a geoseg batch run"):
        run_batch([d / "small.tif"], model=ck, out_dir=out, device="cpu", scheduler=UNREACHABLE)
    assert (out / "small.vrt").read_text() == "someone's own file"


# ------------------------------------------------------------------ 7. scheduler trouble


def test_no_worker_waits_with_a_timeout_then_says_so(data, tmp_path):
    d, ck, singles = data
    with dask_scheduler(tmp_path) as (_, address):
        messages = []
        t0 = time.monotonic()
        with pytest.raises(NoWorkersError, match=rf"no Dask worker joined the scheduler at {address} within 3 s"):
            run_batch(
                [d / "small.tif"],
                model=ck,
                out_dir=tmp_path / "o",
                scheduler=address,
                device="cpu",
                worker_timeout=3,
                on_message=messages.append,
            )
        assert time.monotonic() - t0 < 60
        assert any("waiting for Dask workers" in m and address in m for m in messages)
        # a worker that joins during the wait is used
        workers = []

        def start_worker(message):
            if "waiting for Dask workers" in message and not workers:
                workers.append(dask_worker(address))

        try:
            res = run_batch(
                [d / "small.tif"],
                model=ck,
                out_dir=tmp_path / "o",
                scheduler=address,
                device="cpu",
                worker_timeout=120,
                on_message=start_worker,
            )
        finally:
            for w in workers:
                _kill(w)
        assert workers and len(res.workers) == 1
        np.testing.assert_array_equal(_read(res.scenes[0].mosaic), singles["small"])


def test_losing_the_scheduler_or_every_worker_is_reported_and_resumable(data, tmp_path):
    d, ck, singles = data
    out = tmp_path / "o"
    kw = {"model": ck, "out_dir": out, "region_size": REGION, "device": "cpu"}
    with dask_scheduler(tmp_path) as (sched, address):
        worker = dask_worker(address)
        try:

            def kill_scheduler(done, total, message):
                if done == 2 and sched.poll() is None:
                    os.killpg(sched.pid, signal.SIGKILL)

            t0 = time.monotonic()
            with pytest.raises(SchedulerLostError, match=rf"lost the connection to the Dask scheduler at {address}"):
                run_batch([d / "big.tif", d / "small.tif"], scheduler=address, progress=kill_scheduler, **kw)
            assert time.monotonic() - t0 < 120
        finally:
            _kill(worker)
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["failed"] and all("lost the connection" in f["reason"] for f in summary["failed"])
    done_before = sum(1 for r in _lines(out) if r["kind"] == "task" and r["state"] == "done")
    assert done_before >= 2
    # every worker leaves mid-run and none comes back within worker_timeout
    with dask_scheduler(tmp_path) as (_, address):
        worker = dask_worker(address)
        try:
            _joined(address)  # worker_timeout=3 is for the workers leaving, not for this one's start

            def kill_worker(done, total, message):
                if done == done_before + 1 and worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGKILL)

            with pytest.raises(BatchTaskError, match=rf"no Dask worker at {address} for 3 s") as info:
                run_batch(
                    [d / "big.tif", d / "small.tif"], scheduler=address, progress=kill_worker, worker_timeout=3, **kw
                )
            assert not isinstance(info.value, SchedulerLostError)
        finally:
            _kill(worker)
    # a new scheduler: the run resumes from the manifest and the mosaics are exact
    with dask_scheduler(tmp_path) as (_, address):
        worker = dask_worker(address)
        try:
            res = run_batch([d / "big.tif", d / "small.tif"], scheduler=address, **kw)
        finally:
            _kill(worker)
    assert res.skipped > done_before and not res.failed
    for s in res.scenes:
        np.testing.assert_array_equal(_read(s.mosaic), singles[s.name])


# ------------------------------------------------------------------ 8. GPUs, job-queue options, worker threads


def test_a_result_lost_with_its_worker_after_completing_is_waited_for_not_blocked_on(tmp_path):
    """A future reported complete whose worker dies before its result is read becomes pending again; reading it must
    not block (a batch would then hang instead of reporting that every worker left), and a task's own error is
    still raised."""
    from distributed import Client

    from geoseg.distributed.run import _PENDING_AGAIN, _completed_result

    with dask_scheduler(tmp_path) as (_, address), Client(address, timeout=60) as c:
        worker = dask_worker(address)
        try:
            c.wait_for_workers(1, timeout=120)
            fut, bad = c.submit(sum, [1, 2], pure=False), c.submit(int, "x", pure=False)  # builtins: no pickled code
            assert fut.result(timeout=60) == 3 and _completed_result(fut, 1.0) == 3
            with pytest.raises(ValueError, match="invalid literal"):
                _completed_result(bad, 1.0)
            _kill(worker)
            deadline = time.monotonic() + 60
            while fut.status == "finished":  # the result lived on the killed worker only
                assert time.monotonic() < deadline, fut.status
                time.sleep(0.05)
            t0 = time.monotonic()
            assert _completed_result(fut, 0.5) is _PENDING_AGAIN
            assert time.monotonic() - t0 < 10
        finally:
            _kill(worker)


def test_gpu_pinning_with_a_fake_device_list(monkeypatch):
    assert gpu_worker_envs(["0", "1", "2"]) == [{"CUDA_VISIBLE_DEVICES": d} for d in "012"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpu_worker_envs(["3", "5"], 5)] == ["3", "5", "3", "5", "3"]
    assert gpu_worker_envs(["GPU-8f0e", "GPU-11aa"], 1) == [{"CUDA_VISIBLE_DEVICES": "GPU-8f0e"}]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at the first invalid entry
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({}, count=4) == ["0", "1", "2", "3"]
    # the device is decided for the workers, not from the driver's hardware
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a login node without GPUs
    slurm_gpu = parse_cluster_options(["job_extra_directives=--gres=gpu:1"], cluster="slurm")
    assert _decide_gpu("auto", None, "slurm", remote=False, cluster_kwargs=slurm_gpu) is True
    assert _decide_gpu("auto", None, "slurm", remote=False, cluster_kwargs={"cores": 8}) is False
    assert _decide_gpu("auto", None, "pbs", remote=False, cluster_kwargs={"resource_spec": "select=1:ngpus=1"})
    assert _decide_gpu("auto", None, "local", remote=True, cluster_kwargs={}) is None  # ask the workers
    assert _decide_gpu("auto", None, "local", remote=False, cluster_kwargs={}) is False
    assert _decide_gpu("cpu", 1, "local", remote=False, cluster_kwargs={}) is True
    assert _task_device("auto", True) == "cuda" and _task_device("auto", False) == "auto"


def test_local_cluster_pins_one_gpu_per_worker(data, tmp_path, monkeypatch):
    d, ck, _ = data
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # dask-cuda absent: geoseg pins the workers itself
    handle = make_client("local", gpu=True, gpu_devices=["5", "7"])
    try:
        c = handle.client
        seen = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["5", "7"]
        info = c.scheduler_info()["workers"]
        assert sorted(w["name"] for w in info.values()) == ["gpu-0", "gpu-1"]
        assert all(w["resources"] == {"GPU": 1} for w in info.values())
        # device 'auto' on workers that declare GPUs runs with 'cuda' there (here without CUDA: refused loudly,
        # instead of computing on the CPU while holding a GPU resource)
        with pytest.raises(
            InvalidParameterError, match="on the Dask workers \\(device 'cuda'\\).*CUDA is not available"
        ):
            run_batch([d / "small.tif"], model=ck, out_dir=tmp_path / "o", client=c, retries=0)
    finally:
        handle.close()


def test_list_cluster_options_render_a_valid_job_script():
    pytest.importorskip("dask_jobqueue")
    from geoseg.distributed.cluster import jobqueue_cluster

    opts = parse_cluster_options(
        [
            "job_extra_directives=--gres=gpu:1",
            "job-extra-directives=--constraint=a100,h100",
            "cores=8",
            "memory=16GB",
            "walltime=01:00:00",
            'worker_extra_args=["--lifetime", "55m"]',
            "job_script_prologue=module load cuda",
        ],
        cluster="slurm",
    )
    assert opts["job_extra_directives"] == ["--gres=gpu:1", "--constraint=a100,h100"] and opts["cores"] == 8
    assert requests_gpus(opts)
    cl = jobqueue_cluster("slurm", gpu=requests_gpus(opts), **opts)
    try:
        script = cl.job_script()
    finally:
        cl.close()
    lines = script.splitlines()
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH --constraint=a100,h100" in lines
    assert not any(line.startswith("#SBATCH") and len(line.split(" ", 1)[1]) == 1 for line in lines)
    assert "module load cuda" in lines and "--resources GPU=1" in script and "--lifetime 55m" in script
    pbs = parse_cluster_options(
        ["resource_spec=select=1:ncpus=8:ngpus=1", "job_extra_directives=-q gpu"], cluster="pbs"
    )
    cl = jobqueue_cluster("pbs", gpu=requests_gpus(pbs), cores=8, memory="16GB", **pbs)
    try:
        script = cl.job_script()
    finally:
        cl.close()
    assert "#PBS -l select=1:ncpus=8:ngpus=1" in script and "#PBS -q gpu" in script and "GPU=1" in script
    with pytest.raises(InvalidParameterError, match="not valid JSON"):
        parse_cluster_options(["worker_extra_args=[--lifetime"])


def test_worker_threads_follow_cpu_affinity_and_cgroup_quota(data, tmp_path):
    d, ck, _ = data
    # cgroup v2: the tightest cpu.max along the hierarchy; cgroup v1: cfs quota / period
    v2 = tmp_path / "v2"
    (v2 / "job" / "step").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    (v2 / "job" / "step" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "self_v2").write_text("0::/job/step\n")
    assert cgroup_cpu_limit(root=v2, proc_cgroup=tmp_path / "self_v2") == 1.5
    assert available_cpus(affinity=range(16), cgroup_root=v2, proc_cgroup=tmp_path / "self_v2") == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "slurm" / "job_7").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "slurm" / "job_7" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu,cpuacct" / "slurm" / "job_7" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self_v1").write_text("5:memory:/slurm/job_7\n4:cpu,cpuacct:/slurm/job_7\n")
    assert available_cpus(affinity=range(32), cgroup_root=v1, proc_cgroup=tmp_path / "self_v1") == 3
    (v1 / "cpu,cpuacct" / "slurm" / "job_7" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(affinity=range(6), cgroup_root=v1, proc_cgroup=tmp_path / "self_v1") == 6
    # a real process restricted to one CPU with taskset-style affinity: os.cpu_count() still says all of them
    if len(os.sched_getaffinity(0)) > 1:
        code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        code += "from geoseg.distributed.cluster import available_cpus; print(available_cpus(), os.cpu_count())"
        got, total = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
        assert got == "1" and int(total) > 1
    # concurrent tasks on one CPU set share it; separate CPU sets (two jobs on one node) do not
    budgets = {"a": ("node1", 8), "b": ("node1", 8), "c": ("job2", 8)}
    assert torch_threads_per_task(budgets, {"a": 1, "b": 3, "c": 2}) == {"node1": 2, "job2": 4}
    # a real worker running 2 tasks at once gets half the usable CPUs per task (os.cpu_count() gave it all)
    import torch
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as lc,
        Client(lc) as c,
    ):
        run_batch([d / "small.tif"], model=ck, out_dir=tmp_path / "o", client=c, device="cpu")
        threads = c.run(torch.get_num_threads)
        assert list(threads.values()) == [max(1, c.run(available_cpus).popitem()[1] // 2)]


# ------------------------------------------------------------------ 9. the dashboard link works


def test_the_dashboard_link_serves_the_dashboard(client):
    import urllib.request

    tomllib = pytest.importorskip("tomllib")

    from distributed.versions import BOKEH_REQUIREMENT
    from packaging.requirements import Requirement

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    bokeh = [Requirement(r) for r in extras["distributed"] if Requirement(r).name == "bokeh"]
    assert bokeh and all(bokeh[0].specifier.contains(v) for v in ("3.1.0", "3.9.2"))
    assert not bokeh[0].specifier.contains("3.0.3") and BOKEH_REQUIREMENT.specifier.contains("3.1.0")
    link = client.dashboard_link
    with urllib.request.urlopen(link, timeout=30) as page:
        body = page.read().decode("utf-8", "replace")
    assert page.status == 200 and "Dask needs bokeh" not in body and "bokeh" in body.lower()
