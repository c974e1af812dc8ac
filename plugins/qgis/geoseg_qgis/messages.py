"""geoseg's error messages in a dialog's terms: parameter labels instead of library keywords and CLI flags.

geoseg words its hints for Python and the command line: ``Pass bands=... (CLI: --bands) listing 6 raster bands ...,
e.g. bands='1-6' (CLI: --bands 1-6)``. A dialog has neither, so :func:`in_dialog_terms` names the dialog's parameter
instead: ``Set 'Band mapping' listing 6 raster bands ..., e.g. 'Band mapping' = 1-6``. Each algorithm gives its
``terms``: geoseg's keyword (a CLI flag without its dashes, ``-`` read as ``_``) -> the label of its parameter.
Keywords and flags a dialog does not offer are left as they are. This module imports nothing from QGIS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ASIDE = re.compile(r"\s*\(([^()]*\bCLI\b[^()]*)\)")
_KEYWORD = re.compile(r"(?<![\w.-])([a-z_][a-z0-9_]*)=(\[\.\.\.\]|\.\.\.|'[^']*'|\"[^\"]*\"|[^\s,;()]*)")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)(?: ((?!-)[^\s,;()]+))?")


#: words that follow a bare flag in geoseg's sentences ("--overwrite to replace it", "--bands listing 6 bands"):
#: never the flag's value
_NOT_VALUES = frozenset({
    "a", "an", "and", "applies", "are", "as", "at", "but", "by", "can", "cannot", "chooses", "for", "gives", "has",
    "holds", "if", "in", "is", "listing", "lists", "must", "names", "needs", "not", "of", "on", "only", "or", "the",
    "to", "was", "when", "with", "without",
})  # fmt: skip


def _key(name: str) -> str:
    return name.replace("-", "_").lower()


def _value(raw: str | None) -> str:
    if (raw or "").replace(".", "") in ("", "[]") or re.fullmatch(r"[A-Z][A-Z_]*[A-Z]", raw or ""):
        return ""  # `...`, `[...]` and `NAME`, `VALUE` (geoseg.hints.placeholder) stand for a value the user gives
    raw = (raw or "").rstrip(".")
    if len(raw) > 1 and raw[0] in "'\"" and raw[-1] == raw[0]:
        raw = raw[1:-1]
    return raw


def _named(label: str, value: str) -> str:
    return f"'{label}' = {value}" if value else f"'{label}'"


def in_dialog_terms(message: str, terms: Mapping[str, str]) -> str:
    """``message`` on one line, with the library keywords (``bands=...``) and CLI flags (``--bands 1,2``) that
    ``terms`` knows replaced by their parameter's label (``'Band mapping' = 1,2``), and the ``(CLI: ...)`` asides
    that only repeat them removed."""
    known = {_key(k): v for k, v in terms.items()}
    text = " ".join(message.split())

    def aside(m: re.Match[str]) -> str:
        inner = m.group(1)
        names = [_key(k) for k, _ in _KEYWORD.findall(inner)] + [_key(f) for f, _ in _FLAG.findall(inner)]
        labels = [known.get(n) for n in names]
        if not labels or None in labels:
            return m.group(0)  # an option the dialog does not offer: keep geoseg's words
        before = text[max(0, m.start() - 60) : m.start()]
        if any(known.get(_key(k)) in labels for k, _ in _KEYWORD.findall(before)):
            return ""  # it repeats the keyword just before it
        return f" ('{labels[0]}')"

    text = _ASIDE.sub(aside, text)
    text = _KEYWORD.sub(lambda m: _named(known[_key(m.group(1))], _value(m.group(2))) if _key(m.group(1)) in known
                        else m.group(0), text)  # fmt: skip

    def flag(m: re.Match[str]) -> str:
        if _key(m.group(1)) not in known:
            return m.group(0)
        value = m.group(2)
        if value is not None and value in _NOT_VALUES:  # a bare flag: the next word is the sentence's
            return _named(known[_key(m.group(1))], "") + " " + value
        return _named(known[_key(m.group(1))], _value(value))

    text = _FLAG.sub(flag, text)
    text = re.sub(r"\b([Pp])ass( the [\w ]+)? (\(?)'", lambda m: ("S" if m.group(1) == "P" else "s") + "et"
                  + (m.group(2) or "") + " " + m.group(3) + "'", text)  # fmt: skip
    return text.strip()


__all__ = ["in_dialog_terms"]
