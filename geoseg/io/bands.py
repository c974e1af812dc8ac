"""Band selection: 1-based indexes, ranges and band names (descriptions), in any order."""

from __future__ import annotations

import re
from collections.abc import Sequence

from geoseg.errors import BandSelectionError
from geoseg.hints import option

BandSpec = str | int | Sequence[int | str] | None

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_band_spec(spec: BandSpec) -> list[int | str] | None:
    """Turn ``"1,3,5-8"``, ``"B04,B03,B02"``, ``[4, 3, 2]`` or ``"red,nir"`` into a list of indexes and names.

    Integers (and all-digit strings) are 1-based band indexes; ``a-b`` is an inclusive range; anything else is a
    band name matched against the raster's band descriptions.

    Raises:
        BandSelectionError: an empty, malformed or descending selection, or one that selects no band.
    """
    if spec is None:
        return None
    items: list[int | str] = []
    parts: Sequence[int | str] = (
        spec.split(",") if isinstance(spec, str) else ([spec] if isinstance(spec, int) else spec)
    )
    for part in parts:
        if isinstance(part, bool):
            raise BandSelectionError(f"band selection item {part!r} is not a band index or name")
        if isinstance(part, int):
            items.append(part)
            continue
        text = str(part).strip()
        if not text:
            raise BandSelectionError(f"empty item in band selection {spec!r}; write e.g. '1,2,3' or '2-5' or 'B04,B08'")
        m = _RANGE.match(text)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise BandSelectionError(f"band range {text!r} is descending; write it as '{b}-{a}' or list the bands")
            items.extend(range(a, b + 1))
        elif text.isdigit():
            items.append(int(text))
        else:
            items.append(text)
    if not items:
        raise BandSelectionError(f"band selection {spec!r} selects no band")
    return items


def default_band_name(index: int, description: str | None) -> str:
    """The name a band is known by: its description, or its 1-based index as text."""
    return description if description else str(index)


def resolve_bands(spec: BandSpec, descriptions: Sequence[str | None], *, path: str = "raster") -> list[int]:
    """Resolve a band selection against a raster's band descriptions; return 1-based indexes.

    A name matches a description exactly, else ignoring case. A name that more than one band carries (two bands
    described ``B2``) is ambiguous and refused: geoseg never picks the first of them.

    A band selected twice (``1,1,1``, or ``B2,2`` naming band 2 twice) is refused: a model or training run fed the
    same values as two inputs is never what was meant.

    Raises:
        BandSelectionError: a band index or name the raster does not have (with the bands it has), a name that
            several bands share (with their indexes), or a band selected twice.
    """
    count = len(descriptions)
    items = parse_band_spec(spec)
    if items is None:
        return list(range(1, count + 1))
    exact: dict[str, list[int]] = {}
    folded: dict[str, list[int]] = {}
    for i, d in enumerate(descriptions, start=1):
        if d:
            exact.setdefault(d, []).append(i)
            folded.setdefault(d.lower(), []).append(i)
    out: list[int] = []
    for item in items:
        if isinstance(item, int):
            if not 1 <= item <= count:
                raise BandSelectionError(
                    f"band index {item} is out of range: {path} has {count} band(s), valid indexes are 1..{count} "
                    f"(band indexes are 1-based)"
                )
            out.append(item)
            continue
        found = exact.get(item) or folded.get(item.lower())
        if not found:
            named = [d for d in descriptions if d]
            hint = f"its bands are named {', '.join(named)}" if named else "its bands have no names (descriptions)"
            example = ",".join(str(i) for i in range(1, min(count, 3) + 1))
            raise BandSelectionError(
                f"no band named {item!r} in {path}: {hint}; "
                f"select bands by 1-based index instead, e.g. {option('bands', example)}"
            )
        if len(found) > 1:
            which = ", ".join(str(i) for i in found)
            example = ",".join(str(found[0]) if x == item else str(x) for x in items)
            raise BandSelectionError(
                f"band name {item!r} is ambiguous in {path}: bands {which} are all named "
                f"{descriptions[found[0] - 1]!r}; select bands by 1-based index instead (e.g. "
                f"{option('bands', example)}, with the index of the band you mean), or give the bands distinct "
                f"descriptions"
            )
        out.append(found[0])
    _refuse_repeats(spec, out, descriptions)
    return out


def _refuse_repeats(spec: BandSpec, indexes: Sequence[int], descriptions: Sequence[str | None]) -> None:
    """Raise BandSelectionError when ``indexes`` (resolved from ``spec``) hold a band twice."""
    seen: dict[int, int] = {}
    for pos, i in enumerate(indexes, start=1):
        if i in seen:
            name = f" ({descriptions[i - 1]!r})" if descriptions[i - 1] else ""
            shown = ",".join(map(str, spec)) if isinstance(spec, list | tuple) else str(spec)
            raise BandSelectionError(
                f"band selection {shown!r} selects band {i}{name} twice (positions {seen[i]} and {pos}); each "
                f"position must be a different band: list {len(indexes)} distinct bands (1-based indexes or names) in "
                f"{option('bands')}"
            )
        seen[i] = pos
