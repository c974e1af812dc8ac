"""The `geoseg` command: a thin click group over the library functions."""

from __future__ import annotations

import click

from geoseg import __version__
from geoseg.cli.batch_cmd import batch_command
from geoseg.cli.demo_cmd import demo_command
from geoseg.cli.evaluate_cmd import evaluate_command
from geoseg.cli.info_cmd import info_command, models_command
from geoseg.cli.predict_cmd import predict_command
from geoseg.cli.train_cmd import train_command
from geoseg.cli.vectorize_cmd import vectorize_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
def cli() -> None:
    """Semantic segmentation of large multiband and hyperspectral rasters."""


for _cmd in (
    predict_command,
    train_command,
    evaluate_command,
    vectorize_command,
    batch_command,
    info_command,
    models_command,
    demo_command,
):
    cli.add_command(_cmd)

if __name__ == "__main__":
    cli()
