"""No output replaces an input (paths, symlinks, hard links), and one process at a time owns an output folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from geoseg.errors import OutputError, OutputLockedError
from geoseg.io.lock import FolderLock, process_start_ticks
from geoseg.io.write import check_output_path, check_outputs_not_inputs, find_input_clash


def test_outputs_are_checked_against_every_input(tmp_path):
    scene = tmp_path / "scenes" / "a.tif"
    scene.parent.mkdir()
    scene.write_bytes(b"scene")
    truth = tmp_path / "truth.tif"
    truth.write_bytes(b"truth")
    inputs = {scene: "input raster", truth: "truth raster"}
    # a derived name (not the main output) that is the input, reached through "..": refused
    outputs = {tmp_path / "out" / "a.vrt": "VRT", tmp_path / "out" / ".." / "scenes" / "a.tif": "COG"}
    with pytest.raises(OutputError, match=r"COG .*a\.tif is the input raster .*a\.tif; inputs are never overwritten"):
        check_outputs_not_inputs(outputs, inputs, fix="choose another out_dir")
    # a symbolic link to an input, and a hard link to one
    (tmp_path / "link.tif").symlink_to(scene)
    os.link(truth, tmp_path / "hard.tif")
    clash = find_input_clash([tmp_path / "link.tif"], inputs)
    assert clash is not None and clash[2] == scene and "symbolic link" in clash[4]
    clash = find_input_clash([tmp_path / "hard.tif"], [scene, truth])
    assert clash is not None and clash[2] == truth and "hard link" in clash[4]
    with pytest.raises(OutputError, match=r"output .*hard\.tif is the input .*truth\.tif \(a hard link to it\)"):
        check_outputs_not_inputs([tmp_path / "hard.tif"], [scene, truth])
    # a relative input and an absolute output naming the same file
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(OutputError, match="is the input"):
            check_outputs_not_inputs([tmp_path / "scenes" / "a.tif"], ["scenes/a.tif"])
    finally:
        os.chdir(cwd)
    # outputs that do not exist yet and are not inputs; inputs that are not paths are ignored
    assert find_input_clash([tmp_path / "new.tif", tmp_path / "out" / "a.tif"], [scene, None, "", 3]) is None
    # the single-output check (predict, vectorize, train) refuses the same way, even with overwrite
    with pytest.raises(OutputError, match="is the input raster"):
        check_output_path(tmp_path / "link.tif", overwrite=True, inputs={scene: "input raster"})
    assert scene.read_bytes() == b"scene" and truth.read_bytes() == b"truth"


HOLDER = textwrap.dedent(
    """
    import sys, time
    from geoseg.io.lock import FolderLock
    lock = FolderLock(sys.argv[1], what="test").acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


def _hold(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_lock_is_refused_and_a_dead_owner_s_lock_is_taken_over(tmp_path):
    path = tmp_path / "out.lock"
    holder = _hold(path)
    try:
        with pytest.raises(
            OutputLockedError,
            match=rf"in use by another test run \(host {socket.gethostname()}, "
            rf"pid {holder.pid}.*process {holder.pid} is running",
        ):
            FolderLock(path, what="test").acquire()
        assert json.loads(path.read_text())["pid"] == holder.pid  # the refusal left the owner's lock alone
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    messages = []
    with FolderLock(path, what="test", on_message=messages.append) as lock:
        rec = json.loads(path.read_text())
        assert rec["pid"] == os.getpid() and rec["token"] == lock.token
        assert rec["pid_start"] == process_start_ticks(os.getpid())
    assert not path.exists()
    assert len(messages) == 1 and f"pid {holder.pid}" in messages[0] and "no longer runs" in messages[0]


def _write_lock(path, **fields):
    rec = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00+00:00"}
    rec.update(fields)
    path.write_text(json.dumps(rec))


def test_stale_lock_detection(tmp_path):
    path = tmp_path / "x.lock"
    # this host, a live pid that started at another time: the pid was reused, the lock is stale
    _write_lock(path, pid=os.getppid(), pid_start=-5)
    FolderLock(path).acquire().release()
    # this host, live pid, right start time: held
    _write_lock(path, pid=os.getppid(), pid_start=process_start_ticks(os.getppid()))
    with pytest.raises(OutputLockedError, match=f"pid {os.getppid()}"):
        FolderLock(path).acquire()
    # another host: held while its heartbeat is fresh, stale once it is older than stale_after
    _write_lock(path, host="node-17.cluster", pid=4242)
    with pytest.raises(OutputLockedError, match=r"host node-17.cluster, pid 4242.*refreshed \d+ s ago"):
        FolderLock(path, stale_after=600).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    messages = []
    FolderLock(path, stale_after=600, on_message=messages.append).acquire().release()
    assert "node-17.cluster" in messages[0] and "last refreshed" in messages[0]
    # an empty lock file: being created right now (refused) unless it is old (stale)
    path.write_text("")
    with pytest.raises(OutputLockedError, match="creating the lock right now"):
        FolderLock(path).acquire()
    os.utime(path, (old, old))
    FolderLock(path).acquire().release()


def test_the_heartbeat_refreshes_the_lock_and_release_keeps_another_owner_s_lock(tmp_path):
    path = tmp_path / "x.lock"
    lock = FolderLock(path, heartbeat=0.2).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    deadline = time.time() + 10
    while path.stat().st_mtime < time.time() - 60 and time.time() < deadline:
        time.sleep(0.05)
    assert path.stat().st_mtime > time.time() - 60
    _write_lock(path, token="someone-else")  # the lock was taken over (e.g. judged stale elsewhere)
    lock.release()
    assert json.loads(path.read_text())["token"] == "someone-else"


def test_outputs_get_the_permissions_of_a_new_file(tmp_path):
    """A checkpoint (safetensors writes 0600) and a class raster get the same permissions as any new file here."""
    from model_utils import tiny_checkpoint
    from rasters import class_scene, write_raster

    from geoseg.inference import predict_raster

    old = os.umask(0o022)
    try:
        (tmp_path / "plain").write_text("x")
        expected = os.stat(tmp_path / "plain").st_mode & 0o777
        data, _ = class_scene(32, 32, bands=2)
        src = write_raster(tmp_path / "in.tif", data)
        ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"])
        predict_raster(src, tmp_path / "c.tif", model=ck, device="cpu")
    finally:
        os.umask(old)
    assert expected == 0o644
    assert {p.name: oct(os.stat(p).st_mode & 0o777) for p in (tmp_path / "m.safetensors", tmp_path / "c.tif")} == {
        "m.safetensors": oct(expected),
        "c.tif": oct(expected),
    }
