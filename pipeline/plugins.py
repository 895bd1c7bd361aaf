"""Plug-ins register themselves by being defined: a balancer or a network is one file in its package.

:func:`discover` imports every module of a package and collects the subclasses of a base class that give a
``name``; the package's registry is that mapping, so adding a plug-in touches no list anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import TypeVar

from pipeline.errors import ConfigError

B = TypeVar("B")


def discover(package: str, base: type[B]) -> dict[str, type[B]]:
    """``{cls.name: cls}`` for every subclass of ``base`` (at any depth) that sets its own ``name`` class
    attribute and is defined in a module of ``package``, sorted by name.

    Every module of the package (its folder, and folders appended to its ``__path__``) is imported first, so a
    new file is found without being listed. A class counts while its module, as loaded now, defines it (not
    after the module was unloaded or reloaded). Two classes of one name raise :class:`ConfigError` naming both.
    """
    modules = importlib.import_module(package)
    for info in pkgutil.iter_modules(modules.__path__):
        importlib.import_module(f"{package}.{info.name}")
    found: dict[str, type[B]] = {}
    todo = list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not cls.__module__.startswith(f"{package}."):
            continue
        if getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is not cls:
            continue
        other = found.setdefault(name, cls)
        if other is not cls:
            raise ConfigError(
                f"{package}: two plug-ins are named {name!r}: {other.__module__}.{other.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}"
            )
    return dict(sorted(found.items()))
