"""`geoseg train`."""

from __future__ import annotations

from typing import Any

import click

from geoseg.cli.common import describe_refit, emit_result, handle_errors, json_option, progress_display, progress_option
from geoseg.io.normalize import NORMALIZATION_METHODS
from geoseg.models.names import ADAPT_STRATEGIES
from geoseg.train.chips import SAMPLING_MODES
from geoseg.train.names import BASELINES, LOSSES


@click.command("train")
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.argument("output", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML/TOML file of train options.")
@click.option(
    "--arch",
    default=None,
    help="Architecture (see `geoseg models`). [default: from the bands: ssnet; unet for one band]",
)
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
    "--train-area",
    default=None,
    help="Train only on labels inside these polygons (a vector file) or pixel window 'col,row,width,height'.",
)
@click.option(
    "--exclude-area",
    default=None,
    help="Never train on labels inside these polygons or pixel window 'col,row,width,height' (a test region).",
)
@click.option(
    "--label-nodata",
    type=float,
    default=None,
    help="Value of unlabelled pixels in a label raster that declares no nodata (e.g. -1 or 255).",
)
@click.option("--layer", default=None, help="Layer of polygon labels in a file with several layers (GeoPackage).")
@click.option("--epochs", type=int, default=None, help="[default: from the labelled pixel count]")
@click.option(
    "--chip", type=int, default=None, help="Training chip size in pixels. [default: 64, less for small areas]"
)
@click.option("--batch-size", type=int, default=None, help="[default: 8]")
@click.option("--chips-per-epoch", type=int, default=None, help="[default: from the labelled pixel count]")
@click.option(
    "--sampling",
    type=click.Choice(SAMPLING_MODES),
    default=None,
    help="[default: centered (chips centred on labelled pixels)]",
)
@click.option("--lr", type=float, default=None, help="Peak learning rate (one-cycle AdamW). [default: 0.002]")
@click.option("--weight-decay", type=float, default=None, help="AdamW weight decay. [default: 0.01]")
@click.option(
    "--loss", type=click.Choice(LOSSES), default=None, help="[default: ce; ce_dice with the one-band default network]"
)
@click.option(
    "--class-weights",
    default=None,
    help="Comma-separated loss weight per class, e.g. '1,1,4' (any --loss; 0: the class is not learnt).",
)
@click.option("--label-smoothing", type=float, default=None, help="[default: 0.05]")
@click.option(
    "--pixel-steps",
    type=int,
    default=None,
    help="Steps that pre-train the per-pixel classifier (ssnet) before the chips; 0 skips. [default: 1000]",
)
@click.option(
    "--self-training",
    type=int,
    default=None,
    help="Rounds of self-training: a fresh model learns the real labels plus the previous model's confident "
    "calls on the unlabelled pixels; 0 trains on the real labels only. [default: 0]",
)
@click.option(
    "--pseudo-threshold",
    type=float,
    default=None,
    help="Class probability a pixel needs to be pseudo-labelled in self-training. [default: 0.7]",
)
@click.option(
    "--refit/--no-refit",
    default=None,
    help="After validation, train a fresh model on every label (validation blocks too) up to the latest epoch "
    "whose validation mIoU is within 0.01 of the best, and save it; the reported validation is the first model's. "
    "[default: off]",
)
@click.option("--ema/--no-ema", default=None, help="Validate and save a moving average of the weights. [default: on]")
@click.option("--normalization", type=click.Choice(NORMALIZATION_METHODS), default=None)
@click.option("--augment", default=None, help="Comma-separated: flip,rot90,crop,spectral,blur,elastic; 'none'.")
@click.option("--val-fraction", type=float, default=None, help="Share of labelled pixels validated. [default: 0.2]")
@click.option("--block", type=int, default=None, help="Validation block size in pixels. [default: from the labels]")
@click.option("--patience", type=int, default=None, help="Early stopping patience (epochs). [default: none]")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--device", default=None, help="auto, cpu, cuda. [default: auto]")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for torch. [default: the cores this process may use that are not already busy]",
)
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
@click.option(
    "--baseline",
    type=click.Choice(BASELINES),
    default=None,
    help="Also fit a pixel-wise random forest on the training pixels and print its validation IoU beside the "
    "network's (needs scikit-learn: pip install 'geoseg[baseline]').",
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
    to OUTPUT. Options come from --config, overridden by flags; without options the recipe is decided from the data
    (chip and block size, number of steps from the labelled pixel count).

    Validation mIoU: IoU = TP / (TP + FP + FN) per class, averaged over classes present in the validation truth or
    prediction (a class only predicted scores 0; a class absent from both is left out)."""
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
    if isinstance(opts.get("class_weights"), str):
        try:
            opts["class_weights"] = [float(v) for v in opts["class_weights"].split(",")]
        except ValueError as exc:
            raise InvalidParameterError(
                f"--class-weights must be comma-separated numbers, one per class, e.g. '1,1,4'; got "
                f"{opts['class_weights']!r}"
            ) from exc
    with progress_display(progress_kind, "train", unit="epoch") as progress:
        result = train_model(opts.pop("image"), opts.pop("labels"), opts.pop("out"), progress=progress, **opts)

    def text() -> None:
        # epochs are numbered across self-training rounds: say which round's epoch the best one is
        best_round = next((h.get("round", 0) for h in result.history if h["epoch"] == result.best_epoch), 0)
        where = f"epoch {result.best_epoch}"
        if best_round:
            earlier = sum(1 for h in result.history if h.get("round", 0) < best_round)
            where += f" (self-training round {best_round}, its epoch {result.best_epoch - earlier})"
        net = result.plan.get("network") or {}
        if net:
            chosen = " (the default for this band count; --arch chooses another)" if net["chosen_from_bands"] else ""
            options = ", ".join(f"{k}={v}" for k, v in net["arch_kwargs"].items())
            click.echo(
                f"network {net['arch']}" + (f" ({options})" if options else "") + f", loss {net['loss']}{chosen}"
            )
        then = f"; then {describe_refit(result.refit)}" if result.refit is not None else ""
        click.echo(f"best validation mIoU {result.best_miou:.3f} at {where}{then}; wrote {result.checkpoint}")
        if result.report is not None:
            if result.refit is not None:
                click.echo("validation of the model before it was trained again (without the validation blocks):")
            click.echo(result.report.format_table())
        if result.baseline is not None and result.report is not None:
            click.echo(format_comparison(result.report, result.baseline))

    summary = {
        "output": result.checkpoint,
        "best_miou": result.best_miou,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "state": result.state,
        "network": result.plan.get("network"),
        "refit": result.refit,
        "history": result.history,
        "report": result.report.to_dict() if result.report is not None else None,
        "baseline": result.baseline.to_dict() if result.baseline is not None else None,
    }
    emit_result(as_json, summary, text)


def format_comparison(network: Any, forest: Any) -> str:
    """Per-class validation IoU of the network beside the pixel-wise random forest's, on the same pixels."""
    w = max([8, *(len(c.name) for c in network.classes)])

    def f(x: float) -> str:
        return "    n/a" if x != x else f"{x:7.3f}"

    lines = [f"{'class':<{w}}  {'network':>7}  {'forest':>7}   (validation IoU on the same pixels)"]
    for a, b in zip(network.classes, forest.classes):
        lines.append(f"{a.name:<{w}}  {f(a.iou)}  {f(b.iou)}")
    lines.append(
        f"{'mIoU':<{w}}  {f(network.miou)}  {f(forest.miou)}   (network - forest {network.miou - forest.miou:+.3f})"
    )
    return "\n".join(lines)
