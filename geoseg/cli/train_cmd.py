"""`geoseg train`."""

from __future__ import annotations

from typing import Any

import click

from geoseg.cli.common import emit_result, handle_errors, json_option, progress_display, progress_option
from geoseg.io.normalize import NORMALIZATION_METHODS
from geoseg.models.names import ADAPT_STRATEGIES
from geoseg.train.chips import SAMPLING_MODES
from geoseg.train.names import LOSSES


@click.command("train")
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.argument("output", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML/TOML file of train options.")
@click.option("--arch", default=None, help="Architecture (see `geoseg models`). [default: unet]")
@click.option("--arch-kwargs", default=None, help="Architecture options as JSON, e.g. '{\"width\": 16}'.")
@click.option("--bands", default=None, help="Input bands: '1,2,3', '2-5', 'B04,B08'.")
@click.option("--classes", default=None, help="Comma-separated class names for ids 0..K-1.")
@click.option("--class-field", default=None, help="Class attribute of vector labels (ids or names).")
@click.option(
    "--id-field",
    default=None,
    help="Attribute of vector labels holding the class ids of a --class-field of names (default: names are "
    "numbered by --classes, else alphabetically).",
)
@click.option("--background", type=int, default=None, help="Class id for pixels outside label polygons.")
@click.option(
    "--label-nodata",
    type=float,
    default=None,
    help="Value of unlabelled pixels in a label raster that declares no nodata (e.g. -1 or 255).",
)
@click.option("--layer", default=None, help="Layer of polygon labels in a file with several layers (GeoPackage).")
@click.option("--epochs", type=int, default=None, help="[default: 20]")
@click.option("--chip", type=int, default=None, help="Training chip size in pixels. [default: 128]")
@click.option("--batch-size", type=int, default=None, help="[default: 8]")
@click.option("--chips-per-epoch", type=int, default=None, help="[default: 256]")
@click.option("--sampling", type=click.Choice(SAMPLING_MODES), default=None)
@click.option("--lr", type=float, default=None, help="[default: 0.002]")
@click.option("--loss", type=click.Choice(LOSSES), default=None)
@click.option("--normalization", type=click.Choice(NORMALIZATION_METHODS), default=None)
@click.option("--augment", default=None, help="Comma-separated: flip,rot90,crop,spectral,blur,elastic; 'none'.")
@click.option("--val-fraction", type=float, default=None, help="[default: 0.2]")
@click.option("--block", type=int, default=None, help="Validation block size in pixels. [default: 4 x chip]")
@click.option("--patience", type=int, default=None, help="Early stopping patience (epochs). [default: 5]")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--device", default=None, help="auto, cpu, cuda. [default: auto]")
@click.option("--max-seconds", type=float, default=None, help="Stop after this much wall time.")
@click.option("--encoder", default=None, help="Encoder of encoder-based models, e.g. resnet50 (a timm name for smp-*).")
@click.option(
    "--encoder-weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Pretrained encoder: a local .safetensors/.pth (torchvision, timm, TorchGeo or geoseg keys), or "
    "torchvision:NAME / timm:NAME (fetched; needs a connection).",
)
@click.option(
    "--adapt",
    type=click.Choice(ADAPT_STRATEGIES),
    default=None,
    help="First-layer adaptation when the weights' band count differs. [default: repeat]",
)
@click.option(
    "--encoder-bands", default=None, help="The weights' band names in order (B1,...,B12): match the raster's by name."
)
@click.option("--resume", is_flag=True, default=None, help="Continue from OUTPUT's saved training state.")
@click.option("--overwrite", is_flag=True, default=None)
@progress_option
@json_option
@handle_errors
def train_command(
    image: str | None,
    labels: str | None,
    output: str | None,
    config_file: str | None,
    progress_kind: str,
    as_json: bool,
    **flags: Any,
) -> None:
    """Train a model on IMAGE with LABELS (class raster on the grid, or polygons) and write the best checkpoint
    to OUTPUT. Options come from --config, overridden by flags."""
    from geoseg.errors import InvalidParameterError
    from geoseg.train import load_train_config, train_model
    from geoseg.train.config import normalize_train_options

    opts: dict[str, Any] = load_train_config(config_file) if config_file else {}
    for key, value in flags.items():
        if value is not None:
            opts[key] = value
    for key, value in (("image", image), ("labels", labels), ("out", output)):
        if value is not None:
            opts[key] = value
    missing = [k for k in ("image", "labels", "out") if k not in opts]
    if missing:
        raise InvalidParameterError(f"missing {', '.join(missing)}: pass IMAGE LABELS OUTPUT or set them in --config")
    if config_file:
        from geoseg.io.write import check_outputs_not_inputs
        from geoseg.train.loop import state_path

        outputs = {opts["out"]: "checkpoint", state_path(opts["out"]): "training state"}
        check_outputs_not_inputs(outputs, {config_file: "training config"})
    opts = normalize_train_options(opts)
    with progress_display(progress_kind, "train", unit="epoch") as progress:
        result = train_model(opts.pop("image"), opts.pop("labels"), opts.pop("out"), progress=progress, **opts)

    def text() -> None:
        click.echo(
            f"best validation mIoU {result.best_miou:.3f} at epoch {result.best_epoch}; wrote {result.checkpoint}"
        )
        if result.report is not None:
            click.echo(result.report.format_table())

    summary = {
        "output": result.checkpoint,
        "best_miou": result.best_miou,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "state": result.state,
        "history": result.history,
        "report": result.report.to_dict() if result.report is not None else None,
    }
    emit_result(as_json, summary, text)
