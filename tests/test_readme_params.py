"""The README's parameter table cannot drift from the code: it names every parameter of the schema
(:class:`pipeline.config.Params`, so every key ``params.yaml`` can hold) and no other, and its default column
gives ``params.yaml``'s values.

A row's key cell holds dotted keys in code spans: ``data.image_size``, several keys at once
(``data.synthetic.{n_normal,n_benign}``, or two code spans), or a whole group (``ray.*``), whose meaning cell then
begins each of its comma-separated items with the name of one of the group's keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel, create_model

from pipeline.balancers import balancer_classes
from pipeline.config import Params

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = "## Parameters (`params.yaml`)"
HEADER = "| key | default | meaning |"

Row = tuple[str, str, str]
"""One table row: its key, default and meaning cells."""


def table_rows(readme: str) -> list[Row]:
    """The rows of the table in the parameters section: the lines after its header and separator, up to the
    first line that is not a table row (a blank line ends a Markdown table)."""
    lines = readme.split(SECTION, 1)[1].split("\n## ", 1)[0].splitlines()
    start = lines.index(HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        assert len(cells) == 3, f"README parameter table: a row without 3 cells: {line}"
        rows.append(cells)
    return rows


def _items(cell: str) -> list[str]:
    """``cell`` split at its commas outside code spans and brackets."""
    items, depth, in_code, start = [], 0, False, 0
    for i, char in enumerate(cell):
        if char == "`":
            in_code = not in_code
        elif not in_code and char in "([{":
            depth += 1
        elif not in_code and char in ")]}":
            depth -= 1
        elif not in_code and depth == 0 and char == ",":
            items.append(cell[start:i].strip())
            start = i + 1
    return [*items, cell[start:].strip()]


def _expand(key: str) -> list[str]:
    """``a.{x,y}`` → ``[a.x, a.y]``; any other key as it is."""
    braces = re.fullmatch(r"(.*)\{(.*)\}", key)
    return [braces[1] + name for name in braces[2].split(",")] if braces else [key]


def _row_keys(key_cell: str) -> list[str]:
    return [key for span in re.findall(r"`([^`]+)`", key_cell) for key in _expand(span)]


def documented_keys(rows: list[Row]) -> set[str]:
    """Every dotted key the table names; a group ``g.*`` names ``g.<k>`` for each ``<k>`` its meaning lists."""
    keys = set()
    for key_cell, _, meaning in rows:
        for key in _row_keys(key_cell):
            if key.endswith(".*"):
                keys |= {key[:-1] + named[1] for item in _items(meaning) if (named := re.match(r"`([^`]+)`", item))}
            else:
                keys.add(key)
    return keys


def schema_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """The dotted keys of ``model``'s parameters, nested models expanded (a list of tasks is one parameter); the
    ``balancer`` section holds each registered balancer's settings model."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from schema_keys(field.annotation, f"{prefix}{name}.")
        elif issubclass(model, Params) and name == "balancer":
            for method, cls in balancer_classes().items():
                yield from schema_keys(cls.settings_model, f"balancer.{method}.")
        else:
            yield prefix + name


def test_every_key_the_table_names_is_a_parameter():
    assert sorted(documented_keys(table_rows(README)) - set(schema_keys(Params))) == []


def test_every_parameter_is_in_the_table():
    assert sorted(set(schema_keys(Params)) - documented_keys(table_rows(README))) == []


def test_a_renamed_key_and_a_new_parameter_are_caught():
    renamed = table_rows(README.replace("`data.image_size`", "`data.image_side`"))
    assert documented_keys(renamed) - set(schema_keys(Params)) == {"data.image_side"}
    assert set(schema_keys(Params)) - documented_keys(renamed) == {"data.image_size"}
    grown = create_model("Grown", __base__=Params, new_knob=(int, 0))
    assert set(schema_keys(grown)) - documented_keys(table_rows(README)) == {"new_knob"}


def _value(item: str) -> object:
    """A default cell's item as YAML, backticks removed; ``1e-3`` (a string to YAML 1.1) as a number."""
    value = yaml.safe_load(item.strip("`"))
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_prose(item: str) -> bool:
    """Words describing a value ("all six"), not a value: text with a space outside a code span."""
    return " " in item and not (item.startswith("`") and item.endswith("`"))


def test_the_default_column_gives_the_values_of_params_yaml():
    """A default cell is compared when it gives one value per key of its row; prose ("all six", "lesion +
    diagnosis") is not."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    compared, wrong = 0, []
    for key_cell, default, _ in table_rows(README):
        keys, items = _row_keys(key_cell), _items(default)
        if not default or len(items) != len(keys) or any(map(_is_prose, items)):
            continue
        for key, item in zip(keys, items):
            value = params
            for part in key.split("."):
                value = value.get(part, "<absent>") if isinstance(value, dict) else "<absent>"
            compared += 1
            if _value(item) != value:
                wrong.append(f"{key}: README says {item}, params.yaml has {value!r}")
    assert wrong == []
    assert compared > 40  # most cells are values, so a change in how cells are written is not silently skipped
