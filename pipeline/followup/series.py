"""A wound's photo series: dated image files, sorted by date, validated before anything is measured.

A series is either

- a folder: every file directly in it (not in sub-folders, so a ``masks/`` folder beside the photos is
  not read) with an image suffix of :data:`pipeline.registry.inputs.IMAGE_SUFFIXES`, its date taken
  from its name: one date anywhere in the stem as ``YYYY-MM-DD``, ``YYYY_MM_DD`` or ``YYYYMMDD``
  (``wound_2026-03-01.png``, ``visit-20260301.png``), not run together with other digits;
- or a CSV file with the columns ``path`` and ``date`` (ISO ``YYYY-MM-DD``); a relative path is
  relative to the CSV's folder.

Every problem is a :class:`~pipeline.errors.DataError` naming the file (or CSV line), the value and what
was expected: a name without a date or with an impossible one (``2026-13-40``), a CSV row with a bad
date or path, two photos of the same day, a file that does not exist, a series without photos.
"""

from __future__ import annotations

import csv
import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DataError
from pipeline.registry.inputs import IMAGE_SUFFIXES

NAME_FORMATS = "YYYY-MM-DD, YYYY_MM_DD or YYYYMMDD"
"""Date formats accepted in a file name (shown in error messages)."""
CSV_COLUMNS = ("path", "date")
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})([-_]?)(\d{2})\2(\d{2})(?!\d)")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class Visit:
    """One photo of the series: the visit ``date``, the image ``path`` and ``origin``, where the visit was
    read (the file, or ``<csv> line <n>``), for messages."""

    date: datetime.date
    path: Path
    origin: str


def read_series(source: Path) -> list[Visit]:
    """The visits of the folder or CSV file ``source`` (module docstring), sorted by date."""
    source = Path(source)
    if source.is_dir():
        visits = [Visit(date_in_name(path), path, str(path)) for path in _images_in(source)]
    elif source.is_file() and source.suffix.lower() == ".csv":
        visits = _read_csv(source)
    else:
        raise DataError(f"{source}: expected a folder of dated images or a .csv file with columns path,date")
    if not visits:
        raise DataError(
            f"{source}: no images (a folder contributes files with suffixes {list(IMAGE_SUFFIXES)}, a CSV its rows)"
        )
    _check_distinct_dates(visits)
    missing = [v for v in visits if not v.path.is_file()]
    if missing:
        raise DataError(f"{missing[0].origin}: {missing[0].path}: no such file ({len(missing)} of the series missing)")
    return sorted(visits, key=lambda v: v.date)


def date_in_name(path: Path) -> datetime.date:
    """The one date in the stem of ``path`` (:data:`NAME_FORMATS`); DataError if there is none, several
    or an impossible one."""
    found = list(_NAME_DATE.finditer(Path(path).stem))
    if len(found) != 1:
        what = "no date" if not found else f"{len(found)} dates ({', '.join(m[0] for m in found)})"
        raise DataError(f"{path}: {what} in the file name; expected one date as {NAME_FORMATS}")
    year, _, month, day = found[0].groups()
    try:
        return datetime.date(int(year), int(month), int(day))
    except ValueError:
        raise DataError(f"{path}: {found[0][0]!r} in the file name is not a valid date ({NAME_FORMATS})") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_csv(path: Path) -> list[Visit]:
    """The rows of series CSV ``path``; errors name its line (the header is line 1)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: header {reader.fieldnames} lacks {missing}; expected the columns path,date")
        visits = []
        for row in reader:
            where = f"{path} line {reader.line_num}"
            name, value = (row["path"] or "").strip(), (row["date"] or "").strip()
            if not name:
                raise DataError(f"{where}: empty path; expected an image file (relative to {path.parent} or absolute)")
            visits.append(Visit(_iso_date(value, where), path.parent / name, where))
    return visits


def _iso_date(value: str, where: str) -> datetime.date:
    match = _ISO_DATE.match(value)
    try:
        if match is None:
            raise ValueError
        return datetime.date(*map(int, match.groups()))
    except ValueError:
        raise DataError(f"{where}: date {value!r} is not a valid ISO date; expected YYYY-MM-DD") from None


def _check_distinct_dates(visits: list[Visit]) -> None:
    seen: dict[datetime.date, str] = {}
    for visit in visits:
        if visit.date in seen:
            raise DataError(
                f"{visit.origin}: same date {visit.date.isoformat()} as {seen[visit.date]}; "
                "expected one photo per visit date"
            )
        seen[visit.date] = visit.origin
