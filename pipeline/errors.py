"""Project exceptions.

Every message names the file, key or field at fault and what was expected, so the CLI can print it
on one line without a traceback.
"""


class PipelineError(Exception):
    """Base class for errors the CLI reports as ``error: <message>`` with exit status 2."""


class ConfigError(PipelineError):
    """``params.yaml`` (or an override) has an unknown key, a wrong type or an out-of-range value."""


class DataError(PipelineError):
    """An input image, mask, archive, manifest or array is missing, corrupt or inconsistent."""


class OutputError(PipelineError):
    """An output could not be written because its device is full or its disk quota is spent; the previous
    output is left as it was."""
