"""Exact-duplicate images: the same pixels under two or more record ids.

Public datasets contain them (BUSI has images saved twice, some under different classes). Left
alone, a copy in the training split and another in the test split leaks the test image into
training, and a copy under two labels contradicts itself. Ingest finds the groups
(:func:`duplicate_groups`) and records them in the manifest; split keeps each group in one split and
one fold (:func:`units`).

Pixels, not file bytes, decide: the same image re-encoded (another PNG compressor, RGB-encoded grey)
is still a duplicate. Each image's RGB pixels (:func:`pipeline.data.images.read_image`; a grey image
repeats its level, so grey and RGB-encoded grey agree) are hashed with their shape.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np


def pixel_digest(pixels: np.ndarray) -> str:
    """sha256 of an image's RGB pixels ``(3, H, W)`` uint8, shape included."""
    return hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()


def duplicate_groups(digests: Mapping[str, str]) -> tuple[tuple[str, ...], ...]:
    """Groups of two or more record ids with equal digests (``{id: digest}``); ids and groups sorted."""
    by_digest: dict[str, list[str]] = defaultdict(list)
    for record_id, digest in digests.items():
        by_digest[digest].append(record_id)
    return tuple(sorted(tuple(sorted(ids)) for ids in by_digest.values() if len(ids) > 1))


def describe(groups: Sequence[Sequence[str]], labels: Mapping[str, str]) -> list[str]:
    """One line per group: its ids with their labels, flagged when the labels disagree."""
    lines = []
    for group in groups:
        classes = {labels[i] for i in group}
        note = f" CONFLICTING LABELS {sorted(classes)}" if len(classes) > 1 else ""
        lines.append(" = ".join(f"{i} ({labels[i]})" for i in group) + note)
    return lines


def units(ids: Sequence[str], groups: Sequence[Sequence[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """The splitting units of ``ids``: a duplicate group is one unit, every other id its own.

    Returns each unit's representative (its first id in ``ids`` order), in ``ids`` order, and
    ``{representative: [its ids in ids order]}``. Without duplicates the representatives are ``ids``.
    """
    group_of = {member: tuple(group) for group in groups for member in group}
    members: dict[tuple[str, ...], list[str]] = {}
    for record_id in ids:
        members.setdefault(group_of.get(record_id, (record_id,)), []).append(record_id)
    return [unit[0] for unit in members.values()], {unit[0]: unit for unit in members.values()}
