"""The name → class registry of every family of models selectable by name: background templates
(:mod:`radar.models.templates`), density ratios (:mod:`radar.models.densities`) and classifiers
(:mod:`radar.models.classifiers`)."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["Registry"]


class Registry:
    """Name → class registry for one family of methods living in one package.

    The package's modules (those not starting with ``_``; no package: a family whose classes are all in one
    module) are imported the first time :meth:`get` or
    :meth:`available` is called, which is when their ``@register`` decorators run. A module that fails
    to import is logged and reported by :meth:`get`, without hiding the other methods.
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._classes: dict[str, type] = {}
        self._broken: dict[str, str] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: make the class available as ``name``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(cls: type) -> type:
            known = self._classes.get(name)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered to {known.__module__}.{known.__qualname__}"
                )
            self._classes[name] = cls
            cls.registry_name = name
            return cls

        return decorator

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self.package is None:  # a family registered in one module: nothing to import
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            try:
                importlib.import_module(f"{self.package}.{info.name}")
            except Exception as error:  # a broken method must not hide the others
                self._broken[info.name] = f"{type(error).__name__}: {error}"
                log.error("cannot import %s module %s.%s: %s", self.kind, self.package, info.name, error)

    def get(self, name: str) -> type:
        """The class registered as ``name``; ValueError listing the known names otherwise."""
        self._discover()
        try:
            return self._classes[name]
        except KeyError:
            broken = f"; modules that failed to import: {self._broken}" if self._broken else ""
            raise ValueError(f"unknown {self.kind} {name!r}; available: {self.available()}{broken}") from None

    def available(self) -> list[str]:
        """Sorted registered names."""
        self._discover()
        return sorted(self._classes)
