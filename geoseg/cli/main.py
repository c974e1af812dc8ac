"""The `geoseg` command: a thin click group over the library functions."""

from __future__ import annotations

import sys
from typing import Any

import click

from geoseg import __version__
from geoseg.cli.batch_cmd import batch_command
from geoseg.cli.common import echo_status, json_error
from geoseg.cli.demo_cmd import demo_command
from geoseg.cli.evaluate_cmd import evaluate_command
from geoseg.cli.info_cmd import info_command, models_command
from geoseg.cli.predict_cmd import predict_command
from geoseg.cli.train_cmd import train_command
from geoseg.cli.vectorize_cmd import vectorize_command


class Geoseg(click.Group):
    """The ``geoseg`` group: usage errors (an unknown option, a value of the wrong type, a missing argument) are one
    line, like every other error, with the command's help as the hint; with ``--json`` also a JSON object
    ``{"error": ..., "type": ...}`` on stdout, as for every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        argv = kwargs.get("args", args[0] if args else None)
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = f"{exc.format_message()}{where}"
            echo_status(f"Error: {message}", argv=argv)
            if "--json" in argv:  # the one JSON object --json promises, for errors click finds before the command
                click.echo(json_error(exc, message))
            if not standalone_mode:
                raise
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            if not standalone_mode:
                raise
            echo_status("Aborted.", kind="error", argv=argv)
            sys.exit(130)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


@click.group(cls=Geoseg, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option(
    "--debug",
    is_flag=True,
    help="On an error, show the traceback (and warnings from third-party libraries) as well. Also GEOSEG_DEBUG=1.",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Semantic segmentation of large multiband and hyperspectral rasters.

    Errors are one line (exit status 2 for a bad input or option, 1 for an unexpected failure, 130 when
    interrupted); no output is replaced without --overwrite, and none is ever an input.
    """
    ctx.ensure_object(dict)["debug"] = debug


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
