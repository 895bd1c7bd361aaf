"""Keep credentials out of everything sent to MLflow: params, tags and error messages."""

from __future__ import annotations

import re

from pipeline.environment import secret_values

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]+:)[^/@\s]+@", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every credential of the environment and every ``scheme://user:password@`` password
    replaced by ``***``."""
    for secret in secret_values():
        text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)


def redact_values(values: dict[str, str]) -> dict[str, str]:
    """The mapping with :func:`redact` applied to every value."""
    return {key: redact(value) for key, value in values.items()}
