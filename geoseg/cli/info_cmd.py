"""`geoseg info` and `geoseg models`."""

from __future__ import annotations

import json

import click

from geoseg.cli.common import describe_refit, echo_json, handle_errors


def _is_checkpoint(path: str) -> bool:
    return path.endswith((".safetensors", ".pt", ".pth", ".ckpt"))


@click.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def info_command(path: str, as_json: bool) -> None:
    """Describe a raster (bands, CRS, nodata) or a model checkpoint (its contract)."""
    if _is_checkpoint(path):
        from geoseg.models import read_config

        cfg = read_config(path)
        data = json.loads(cfg.to_json())
        if as_json:
            echo_json(data)
            return
        click.echo(f"model     {cfg.arch} {cfg.arch_kwargs or ''}")
        click.echo(f"bands     {len(cfg.bands)}: {', '.join(cfg.bands)}")
        click.echo(f"classes   {len(cfg.classes)}: {', '.join(cfg.classes)}")
        untrained = [c for c in cfg.classes if cfg.trained_classes is not None and c not in cfg.trained_classes]
        if untrained:
            click.echo(f"untrained {', '.join(untrained)} (no training pixel or class weight 0: never predicted)")
        click.echo(f"normalize {cfg.normalization.get('method', 'none')}")
        click.echo(f"tiling    tile {cfg.tile}, overlap {cfg.overlap}, output stride {cfg.output_stride}")
        weights = cfg.extra.get("encoder_weights")
        if weights:
            click.echo(
                f"pretrain  {weights.get('file')} (sha256 {str(weights.get('sha256'))[:12]}..., layout "
                f"{weights.get('layout')}, adapt {weights.get('adapt')})"
            )
        val = cfg.extra.get("validation")
        if val:
            miou = val.get("miou")
            click.echo(f"val mIoU  {'n/a (nothing validated)' if miou is None else f'{miou:.3f}'}")
        refit = cfg.extra.get("training", {}).get("refit")
        if refit:
            click.echo(f"refit     {describe_refit(refit)}; val mIoU is the model's before it")
        return
    from geoseg.io.read import RasterSource

    with RasterSource(path) as src:
        d = src.describe()
    if as_json:
        echo_json(d)
        return
    click.echo(f"{d['path']}: {d['width']} x {d['height']} px, {len(d['bands'])} band(s)")
    click.echo(f"georef    {d['georeference']}")
    click.echo(f"CRS       {d['crs'] or 'none'}")
    click.echo(f"transform {d['transform']}")
    click.echo(f"mask      {d['mask']}")
    for b in d["bands"]:
        click.echo(f"  band {b['index']:>3}  {b['name']:<16} {b['dtype']:<8} nodata={b['nodata']}")
    classes = d["legend"]["classes"]
    if classes:
        click.echo(f"classes   {len(classes)}: {', '.join(classes)}")


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def models_command(as_json: bool) -> None:
    """List the registered model architectures (those needing a missing extra are marked)."""
    from geoseg.models import list_models

    specs = list_models()
    if as_json:
        echo_json(
            [
                {
                    "name": s.name,
                    "family": s.family,
                    "output_stride": s.output_stride,
                    "description": s.description,
                    "available": s.available,
                    "extra": s.extra or None,
                }
                for s in specs
            ]
        )
        return
    w = max(len(s.name) for s in specs)
    for s in specs:
        needs = "" if s.available else f"  [needs pip install 'geoseg[{s.extra}]']"
        click.echo(f"{s.name:<{w}}  stride {s.output_stride:>2}  {s.description}{needs}")
