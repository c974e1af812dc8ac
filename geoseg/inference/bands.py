"""Match a raster's bands to a model's contract; refuse to guess."""

from __future__ import annotations

from collections.abc import Sequence

from geoseg.errors import ModelContractError
from geoseg.io.bands import BandSpec, parse_band_spec
from geoseg.models.config import ModelConfig


def _summary(names: Sequence[str]) -> str:
    return ",".join(names) if len(names) <= 16 else ",".join(names[:8]) + ",...," + ",".join(names[-3:])


def match_bands(config: ModelConfig, descriptions: Sequence[str | None], bands: BandSpec = None) -> BandSpec:
    """Band selection (for :class:`RasterSource`) that feeds the model its bands in its order.

    * explicit ``bands``: used as given, but their count must equal the model's;
    * otherwise by name: every model band name must be a band description of the raster;
    * otherwise by index, when the model's bands are plain indexes ("1", "2", ...) from an undescribed raster.
    Anything else is an error that names the bands and the fix.
    """
    want = config.bands
    n = len(want)
    have = [d for d in descriptions]
    if bands is not None:
        items = parse_band_spec(bands) or []
        if len(items) != n:
            raise ModelContractError(
                f"model expects {n} band(s) ({_summary(want)}) but the band selection {bands!r} gives {len(items)}; "
                f"select exactly {n} raster bands in the model's order"
            )
        return items
    names = {d for d in have if d}
    if all(b in names for b in want):
        return list(want)
    if all(b.isdigit() for b in want) and all(1 <= int(b) <= len(have) for b in want):
        return [int(b) for b in want]
    raster_names = _summary([d or str(i) for i, d in enumerate(have, start=1)])
    missing = [b for b in want if b not in names]
    if len(have) < n:  # no band selection can help: say so instead of suggesting one
        raise ModelContractError(
            f"model expects {n} band(s) {_summary(want)}; the raster has only {len(have)} band(s) ({raster_names}), "
            f"so no band selection can feed it: use a raster with the model's {n} bands (stack single-band files "
            f"with gdalbuildvrt -separate), or a model trained on {len(have)} band(s)"
        )
    example = ",".join(str(i) for i in range(1, n + 1)) if n <= 4 else f"1-{n}"
    raise ModelContractError(
        f"model expects {n} band(s) {_summary(want)}; the raster has {len(have)} band(s) ({raster_names}) and lacks "
        f"{_summary(missing)}. Pass bands=... (CLI: --bands) listing {n} raster bands (1-based indexes or names) in "
        f"the model's order, e.g. bands='{example}' (CLI: --bands {example})"
    )
