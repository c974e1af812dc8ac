"""Match a raster's bands to a model's contract; refuse to guess."""

from __future__ import annotations

from collections.abc import Sequence

from geoseg.errors import BandSelectionError, ModelContractError
from geoseg.hints import option
from geoseg.io.bands import BandSpec, parse_band_spec, resolve_bands
from geoseg.models.config import ModelConfig


def _summary(names: Sequence[str]) -> str:
    return ",".join(names) if len(names) <= 16 else ",".join(names[:8]) + ",...," + ",".join(names[-3:])


def _fold(name: str | None) -> str:
    return (name or "").strip().casefold()


def _check_against_names(
    want: Sequence[str], descriptions: Sequence[str | None], indexes: Sequence[int], bands: BandSpec
) -> None:
    """Refuse an explicit selection that feeds a model input a band the raster names otherwise: a band named as
    another model band, or another band where the raster has one named as this input (names compared ignoring case;
    names several bands share are not used).

    Raises:
        BandSelectionError: naming the first contradiction and the selection the raster's names give.
    """
    count: dict[str, int] = {}
    for d in descriptions:
        if d:
            count[_fold(d)] = count.get(_fold(d), 0) + 1
    named = {_fold(d): i for i, d in enumerate(descriptions, start=1) if d and count[_fold(d)] == 1}
    wanted = {_fold(w) for w in want}
    for pos, (w, i) in enumerate(zip(want, indexes, strict=True), start=1):
        got = descriptions[i - 1]
        if _fold(got) == _fold(w):
            continue
        if (got and _fold(got) in wanted and _fold(got) in named) or _fold(w) in named:
            fix = [named.get(_fold(x), j) for x, j in zip(want, indexes, strict=True)]
            shown = ",".join(map(str, bands)) if isinstance(bands, list | tuple) else str(bands)
            here = f"band {i} ({got!r})" if got else f"band {i} (unnamed)"
            if _fold(w) in named:
                why = f"but the raster's band {named[_fold(w)]} is named {w!r}"
            else:
                other = next(k for k, x in enumerate(want, start=1) if _fold(x) == _fold(got))
                why = f"but {got!r} is the model's input {other}"
            every = all(_fold(x) in named for x in want)
            fix_text = ",".join(map(str, fix))
            remedy = (
                f"pass {option('bands', fix_text)}, or omit {option('bands')}: the raster's band names match the "
                f"model's"
                if every
                else f"pass {option('bands', fix_text)}"
            )
            raise BandSelectionError(
                f"band selection {shown!r} feeds {here} to model input {pos} ({w!r}), {why}; {remedy} (if the "
                f"raster's band names are wrong, correct its band descriptions)"
            )


def match_bands(
    config: ModelConfig, descriptions: Sequence[str | None], bands: BandSpec = None, *, path: str = "the raster"
) -> BandSpec:
    """Band selection (for :class:`RasterSource`) that feeds the model its bands in its order.

    * explicit ``bands``: their count must equal the model's, each band is selected once, and where the raster
      names its bands, the selection must not contradict the names (``3,2,1`` on a raster whose bands 1, 2, 3 are
      named as the model's bands in that order feeds them reversed: refused with the selection that matches);
    * otherwise by name: every model band name must be a band description of the raster;
    * otherwise by index, when the model's bands are plain indexes ("1", "2", ...) from an undescribed raster.
    Anything else is an error that names the bands and the fix.
    """
    want = config.bands
    n = len(want)
    have = [d for d in descriptions]
    if bands is not None:
        items = parse_band_spec(bands) or []
        # each band must exist before the count is compared: '0' or '1-' is a wrong band, not a wrong count
        indexes = resolve_bands(items, descriptions, path=path)
        if len(items) != n:
            raise ModelContractError(
                f"model expects {n} band(s) ({_summary(want)}) but the band selection {bands!r} gives {len(items)}; "
                f"select exactly {n} raster bands in the model's order"
            )
        _check_against_names(want, descriptions, indexes, bands)
        return list(indexes)
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
        f"{_summary(missing)}. Pass {option('bands')} listing {n} raster bands (1-based indexes or names) in the "
        f"model's order, e.g. {option('bands', example)}"
    )
