"""`geoseg train`."""

from __future__ import annotations

import json

import click

from geoseg.cli.common import handle_errors, make_progress, progress_option


@click.command("train")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("labels", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--arch", default="unet", show_default=True, help="Architecture (see `geoseg models`).")
@click.option("--arch-kwargs", default="{}", help="Architecture options as JSON, e.g. '{\"width\": 16}'.")
@click.option("--bands", default=None, help="Input bands: '1,2,3', '2-5', 'B04,B08'.")
@click.option("--classes", default=None, help="Comma-separated class names for ids 0..K-1.")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--chip", type=int, default=128, show_default=True, help="Training chip size in pixels.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--chips-per-epoch", type=int, default=256, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--loss", type=click.Choice(["ce", "weighted_ce", "dice", "ce_dice"]), default="ce", show_default=True)
@click.option("--normalization", type=click.Choice(["meanstd", "percentile", "minmax", "none"]), default="meanstd")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--block", type=int, default=None, help="Validation block size in pixels (default 4 x chip).")
@click.option("--patience", type=int, default=5, show_default=True, help="Early stopping patience (epochs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--max-seconds", type=float, default=None, help="Stop after this much wall time.")
@click.option("--overwrite", is_flag=True)
@progress_option
@handle_errors
def train_command(
    image: str,
    labels: str,
    output: str,
    arch: str,
    arch_kwargs: str,
    bands: str | None,
    classes: str | None,
    progress_kind: str,
    **opts: object,
) -> None:
    """Train a model on IMAGE with integer LABELS (same grid) and write the best checkpoint to OUTPUT."""
    from geoseg.errors import InvalidParameterError
    from geoseg.train import train_model

    try:
        kwargs = json.loads(arch_kwargs)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"--arch-kwargs is not valid JSON ({exc}); e.g. '{{\"width\": 16}}'") from exc
    progress = make_progress(progress_kind, "train", unit="epoch")
    try:
        result = train_model(
            image,
            labels,
            output,
            arch=arch,
            arch_kwargs=kwargs,
            bands=bands,
            classes=classes.split(",") if classes else None,
            progress=progress,
            **opts,
        )  # type: ignore[arg-type]
    finally:
        getattr(progress, "close", lambda: None)()
    click.echo(f"best validation mIoU {result.best_miou:.3f} at epoch {result.best_epoch}; wrote {result.checkpoint}")
    if result.report is not None:
        click.echo(result.report.format_table())
