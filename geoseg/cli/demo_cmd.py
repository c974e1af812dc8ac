"""`geoseg demo`."""

from __future__ import annotations

import click

from geoseg.cli.common import handle_errors, tune_cpu_allocator


@click.command("demo")
@click.option("--out", "out_dir", default="geoseg-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--arch", default="tiny", show_default=True, help="Architecture to train.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--max-seconds", type=float, default=50.0, show_default=True, help="Training time budget.")
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier demo in the --out folder.")
@handle_errors
def demo_command(out_dir: str, arch: str, epochs: int, max_seconds: float, device: str, overwrite: bool) -> None:
    """Generate the sample scene, train briefly, predict, vectorize and print the per-class IoU report.

    The files appear in the --out folder when the demo has finished, all together; an error or Ctrl-C leaves none.
    """
    from geoseg.demo import run_demo

    tune_cpu_allocator(device)
    result = run_demo(
        out_dir,
        arch=arch,
        epochs=epochs,
        max_seconds=max_seconds,
        device=device,
        echo=click.echo,
        overwrite=overwrite,
    )
    click.echo(f"done in {result.seconds:.0f}s; outputs in {result.out_dir}")
