"""Which artifact formats `embedrpc export` writes: `--formats` parsed against the bundle's
format declarations (service/bundle/formats.py)."""

from __future__ import annotations

from embedrpc.export.errors import ExportError
from embedrpc.service.bundle.formats import FAMILIES, FORMATS, of_family

ALL = "all"


def parse_formats(text: str | None) -> list[str]:
    """Comma-separated format names, family names or `all`, checked, in canonical order."""
    if not text:
        return list(FORMATS)
    chosen: set[str] = set()
    for item in (part.strip().lower() for part in text.split(",")):
        if item in FORMATS:
            chosen.add(item)
        elif item in FAMILIES:
            chosen.update(spec.name for spec in of_family(FAMILIES[item]))
        elif item == ALL:
            chosen.update(FORMATS)
        else:
            raise ExportError(f"unknown format {item!r}; choose from "
                              f"{', '.join([*FORMATS, *FAMILIES, ALL])}")
    return [name for name in FORMATS if name in chosen]
