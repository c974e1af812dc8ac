"""The `geoseg` command: a thin click group over the library functions."""

from __future__ import annotations

import click

from geoseg import __version__
from geoseg.cli.demo_cmd import demo_command
from geoseg.cli.info_cmd import info_command, models_command
from geoseg.cli.predict_cmd import predict_command
from geoseg.cli.train_cmd import train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
def cli() -> None:
    """Semantic segmentation of large multiband and hyperspectral rasters."""


for _cmd in (predict_command, train_command, info_command, models_command, demo_command):
    cli.add_command(_cmd)


def _add_optional() -> None:
    """Commands whose modules may be absent in a trimmed install."""
    import importlib

    for module, name in (
        ("geoseg.cli.vectorize_cmd", "vectorize_command"),
        ("geoseg.cli.evaluate_cmd", "evaluate_command"),
        ("geoseg.cli.batch_cmd", "batch_command"),
    ):
        try:
            cli.add_command(getattr(importlib.import_module(module), name))
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_add_optional()

if __name__ == "__main__":
    cli()
