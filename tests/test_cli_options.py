"""Every option of every command reaches the library call it claims to drive.

For each command, the library functions it calls are replaced by recorders (the functions themselves are tested in
their own modules); the command runs once with its base arguments and once more per option, set to a non-default
value. An option whose run records the same library calls as the base run was silently ignored. Every option of
every command must appear in CASES (or in CLI_ONLY, with the reason it reaches no library call), so a new option
cannot skip this check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.io.outputs import OutputSet
from geoseg.io.write import parse_temporary
from geoseg.report import REPORT_FORMATS, report_paths

# (module, function) the CLI commands call; each is replaced by a recorder
LIBRARY_CALLS = [
    ("geoseg.inference.predict", "predict_raster"),
    ("geoseg.train", "train_model"),
    ("geoseg.train", "load_train_config"),
    ("geoseg.evaluation", "evaluate"),
    ("geoseg.evaluation", "check_truth"),
    ("geoseg.vectorization", "vectorize"),
    ("geoseg.report", "write_report"),
    ("geoseg.distributed", "run_batch"),
    ("geoseg.demo", "run_demo"),
]

# CLI modules that declare a command's outputs themselves (OutputSet: checked, staged, published together)
OUTPUT_SET_USERS = ["geoseg.cli.evaluate_cmd"]

# command -> (base arguments, {option: (extra arguments, extra arguments of the run it is compared with)})
CASES: dict[str, tuple[list[str], dict[str, tuple[list[str], list[str]]]]] = {
    "predict": (
        ["in.tif", "out.tif", "-m", "m.safetensors"],
        {
            "--model": (["-m", "other.safetensors"], []),
            "--bands": (["--bands", "1,2"], []),
            "--tile": (["--tile", "128"], []),
            "--overlap": (["--overlap", "16"], []),
            "--batch-size": (["--batch-size", "2"], []),
            "--device": (["--device", "cpu"], []),
            "--stitch": (["--stitch", "mean"], []),
            "--probabilities": (["--probabilities", "p.tif"], []),
            "--prob-dtype": (["--probabilities", "p.tif", "--prob-dtype", "float32"], ["--probabilities", "p.tif"]),
            "--nodata": (["--nodata", "5"], []),
            "--workers": (["--workers", "2"], []),
            "--threads": (["--threads", "1"], []),
            "--cache-mb": (["--cache-mb", "0"], []),
            "--no-amp": (["--no-amp"], []),
            "--crf": (["--crf"], []),
            "--tta": (["--tta"], []),
            "--vector": (["--vector", "v.gpkg"], []),
            "--truth": (["--truth", "t.tif"], []),
            "--report": (["--truth", "t.tif", "--report", "rep"], ["--truth", "t.tif"]),
            "--class-field": (["--truth", "t.gpkg", "--class-field", "cls"], ["--truth", "t.gpkg"]),
            "--truth-layer": (["--truth", "t.gpkg", "--truth-layer", "a"], ["--truth", "t.gpkg"]),
            "--overwrite": (["--overwrite"], []),
            "--progress": (["--progress", "json"], []),
        },
    ),
    "train": (
        ["img.tif", "lab.tif", "out.safetensors"],
        {
            "--config": (["--config", "{config}"], []),
            "--arch": (["--arch", "tiny"], []),
            "--arch-kwargs": (["--arch-kwargs", '{"width": 4}'], []),
            "--bands": (["--bands", "1,2"], []),
            "--classes": (["--classes", "a,b"], []),
            "--class-field": (["--class-field", "cls"], []),
            "--id-field": (["--class-field", "name", "--id-field", "cid"], ["--class-field", "name"]),
            "--background": (["--background", "0"], []),
            "--label-nodata": (["--label-nodata", "-1"], []),
            "--layer": (["--layer", "fields"], []),
            "--train-area": (["--train-area", "0,0,10,10"], []),
            "--exclude-area": (["--exclude-area", "0,0,10,10"], []),
            "--epochs": (["--epochs", "3"], []),
            "--chip": (["--chip", "32"], []),
            "--batch-size": (["--batch-size", "2"], []),
            "--chips-per-epoch": (["--chips-per-epoch", "16"], []),
            "--sampling": (["--sampling", "grid"], []),
            "--lr": (["--lr", "0.1"], []),
            "--loss": (["--loss", "dice"], []),
            "--weight-decay": (["--weight-decay", "0.1"], []),
            "--class-weights": (["--class-weights", "1,3"], []),
            "--label-smoothing": (["--label-smoothing", "0.1"], []),
            "--pixel-steps": (["--pixel-steps", "5"], []),
            "--self-training": (["--self-training", "2"], []),
            "--pseudo-threshold": (["--pseudo-threshold", "0.9"], []),
            "--refit": (["--no-refit"], []),
            "--ema": (["--no-ema"], []),
            "--normalization": (["--normalization", "minmax"], []),
            "--augment": (["--augment", "flip"], []),
            "--val-fraction": (["--val-fraction", "0.5"], []),
            "--block": (["--block", "64"], []),
            "--patience": (["--patience", "2"], []),
            "--seed": (["--seed", "7"], []),
            "--device": (["--device", "cpu"], []),
            "--max-seconds": (["--max-seconds", "5"], []),
            "--threads": (["--threads", "1"], []),
            "--baseline": (["--baseline", "rf"], []),
            "--encoder": (["--encoder", "resnet50"], []),
            "--encoder-weights": (["--encoder-weights", "w.safetensors"], []),
            "--encoder-bands": (["--encoder-bands", "B2,B3,B4"], []),
            "--adapt": (["--adapt", "mean"], []),
            "--resume": (["--resume"], []),
            "--overwrite": (["--overwrite"], []),
            "--progress": (["--progress", "json"], []),
        },
    ),
    "evaluate": (
        ["pred.tif", "truth.tif"],
        {
            "--classes": (["--classes", "a,b"], []),
            "--ignore-index": (["--ignore-index", "0"], []),
            "--class-field": (["--class-field", "cls"], []),
            "--id-field": (["--class-field", "name", "--id-field", "cid"], ["--class-field", "name"]),
            "--background": (["--background", "0"], []),
            "--aoi": (["--aoi", "aoi.gpkg"], []),
            "--truth-layer": (["--truth-layer", "truth"], []),
            "--aoi-layer": (["--aoi", "aoi.gpkg", "--aoi-layer", "fields"], ["--aoi", "aoi.gpkg"]),
            "--report-dir": (["--report-dir", "rep"], []),
            "--format": (["--report-dir", "rep", "--format", "json"], ["--report-dir", "rep"]),
            "--window": (["--window", "64"], []),
            "--overwrite": (["--report-dir", "rep", "--overwrite"], ["--report-dir", "rep"]),
            "--progress": (["--progress", "json"], []),
        },
    ),
    "vectorize": (
        ["classes.tif", "out.gpkg"],
        {
            "--min-area": (["--min-area", "5"], []),
            "--simplify": (["--simplify", "1"], []),
            "--connectivity": (["--connectivity", "8"], []),
            "--crs": (["--crs", "EPSG:4326"], []),
            "--probabilities": (["--probabilities", "p.tif"], []),
            "--classes": (["--classes", "a,b"], []),
            "--window": (["--window", "64"], []),
            "--layer": (["--layer", "polys"], []),
            "--overwrite": (["--overwrite"], []),
            "--progress": (["--progress", "json"], []),
        },
    ),
    "batch": (
        ["a.tif", "-m", "m.safetensors", "-o", "maps"],
        {
            "--model": (["-m", "other.safetensors"], []),
            "--out-dir": (["-o", "other"], []),
            "--manifest": (["--manifest", "list.txt"], []),
            "--scheduler": (["--scheduler", "tcp://127.0.0.1:1"], []),
            "--cluster": (["--cluster", "slurm"], []),
            "--workers": (["--workers", "3"], []),
            "--cluster-option": (["--cluster-option", "memory_limit=4GB"], []),
            "--worker-timeout": (["--worker-timeout", "30"], []),
            "--region-size": (["--region-size", "1024"], []),
            "--tile": (["--tile", "128"], []),
            "--overlap": (["--overlap", "16"], []),
            "--batch-size": (["--batch-size", "2"], []),
            "--device": (["--device", "cpu"], []),
            "--cache-mb": (["--cache-mb", "0"], []),
            "--bands": (["--bands", "1,2"], []),
            "--truth-dir": (["--truth-dir", "truth"], []),
            "--cog": (["--cog"], []),
            "--retries": (["--retries", "1"], []),
            "--overwrite": (["--overwrite"], []),
            "--progress": (["--progress", "json"], []),
        },
    ),
    "demo": (
        [],
        {
            "--out": (["--out", "elsewhere"], []),
            "--arch": (["--arch", "unet"], []),
            "--epochs": (["--epochs", "2"], []),
            "--max-seconds": (["--max-seconds", "5"], []),
            "--device": (["--device", "cpu"], []),
            "--overwrite": (["--overwrite"], []),
        },
    ),
}

# inputs a command checks itself before calling the library (ground truth of `predict --truth`)
EXISTING_INPUTS = ("t.tif", "t.gpkg")

# options that change only what the command prints, never a library call
CLI_ONLY = {
    ("batch", "--json"): "prints the summary as JSON",
    ("predict", "--json"): "prints the result as JSON",
    ("train", "--json"): "prints the result as JSON",
    ("evaluate", "--json"): "prints the result as JSON",
    ("vectorize", "--json"): "prints the result as JSON",
    ("info", "--json"): "prints JSON",
    ("models", "--json"): "prints JSON",
}
NO_LIBRARY_CALL = {"info", "models"}  # commands that only describe their input (tested in test_cli.py)


class Anything:
    """What a recorder returns: every attribute, item, format, subtraction and iteration works, so the CLI's printing
    runs."""

    def __getattr__(self, name: str) -> Anything:
        return Anything()

    def __call__(self, *args: Any, **kwargs: Any) -> Anything:
        return Anything()

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __getitem__(self, key: Any) -> Anything:
        return Anything()

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __sub__(self, other: Any) -> Anything:
        return Anything()

    def __format__(self, spec: str) -> str:
        return "0"

    def __str__(self) -> str:
        return "x"


def _final(value: str | Path) -> str:
    """A path with each staged (temporary) component replaced by the final name it stands for."""
    return str(Path(*[(parse_temporary(part) or (part,))[0] for part in Path(value).parts]))


def _describe(value: Any) -> str:
    if callable(value) and not isinstance(value, type):
        return f"<{type(value).__name__}>"
    if isinstance(value, str | Path) and ".partial" in str(value):
        return repr(_final(value))
    return repr(value)


def _write_staged(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Create what a library call would have written to the command's staged outputs (which it then publishes)."""
    if name == "write_report":
        for path in report_paths(args[1], formats=kwargs.get("formats", REPORT_FORMATS)).values():
            path.write_text("")
        return
    for value in (*args, *kwargs.values()):
        if isinstance(value, str | Path) and parse_temporary(Path(value).name):
            Path(value).write_bytes(b"")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]]:
    import importlib

    calls: list[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = []
    for module, name in LIBRARY_CALLS:

        def recorder(*args: Any, _name: str = name, **kwargs: Any) -> Any:
            _write_staged(_name, args, kwargs)
            calls.append(
                (_name, tuple(map(_describe, args)), tuple(sorted((k, _describe(v)) for k, v in kwargs.items())))
            )
            return {"epochs": 3} if _name == "load_train_config" else Anything()

        monkeypatch.setattr(importlib.import_module(module), name, recorder)

    class RecordingOutputSet(OutputSet):
        """The commands' output sets do real work (check, stage, publish); record how they were made."""

        def __init__(self, inputs: Any = (), *, overwrite: bool = False) -> None:
            calls.append(("OutputSet", (), (("overwrite", repr(overwrite)),)))
            super().__init__(inputs, overwrite=overwrite)

    for module in OUTPUT_SET_USERS:
        monkeypatch.setattr(importlib.import_module(module), "OutputSet", RecordingOutputSet)
    return calls


def _params(command: str) -> list[str]:
    cmd = cli.commands[command]
    return sorted(max(p.opts, key=len) for p in cmd.params if isinstance(p, click.Option) and p.name != "help")


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_option_is_covered(command: str) -> None:
    covered = set(CASES.get(command, ([], {}))[1]) | {o for c, o in CLI_ONLY if c == command}
    missing = [o for o in _params(command) if o not in covered]
    assert command in CASES or command in NO_LIBRARY_CALL, f"add `geoseg {command}` to CASES"
    assert not missing, f"geoseg {command}: add {missing} to CASES (or CLI_ONLY with a reason)"


def _run(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the command in a fresh folder ``cwd`` (outputs of an earlier run would be refused without --overwrite)."""
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for name in EXISTING_INPUTS:
        (cwd / name).write_bytes(b"")
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("command", "option"), [(c, o) for c, (_, options) in sorted(CASES.items()) for o in sorted(options)]
)
def test_option_reaches_the_library(
    command: str, option: str, recorded: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 3\n")
    base, options = CASES[command]
    extra, reference = options[option]
    extra = [a.replace("{config}", str(config)) for a in extra]
    _run([command, *base, *reference], tmp_path / "reference", monkeypatch)
    before = list(recorded)
    recorded.clear()
    _run([command, *base, *extra], tmp_path / "option", monkeypatch)
    assert before, f"geoseg {command} {' '.join(base)} made no library call"
    assert recorded != before, f"geoseg {command} {option} changed no library call: the option is ignored"
