"""A catalog of presets by name: what the engine registry and the speech registry both are.

A preset is data with a ``name`` and a ``"module:function"`` ``loader``; the catalog refuses a
second preset of the same name or a loader of another form, names the known ones when asked for
an unknown one, and imports the loader only when an engine is built (the worker), so reading
presets imports no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, cast


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def loader(self) -> str: ...


P = TypeVar("P", bound=Named)
E = TypeVar("E")


class Catalog(Generic[P, E]):
    """Presets of one kind (``kind`` names it in errors) whose loaders build an ``E``."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._presets: dict[str, P] = {}

    def add(self, preset: P) -> P:
        if preset.name in self._presets:
            raise ValueError(f"{self._kind} {preset.name!r} is already registered")
        if ":" not in preset.loader:
            raise ValueError(f"{self._kind} {preset.name!r}: loader must be 'module:function'")
        self._presets[preset.name] = preset
        return preset

    def get(self, name: str) -> P:
        try:
            return self._presets[name]
        except KeyError:
            known = ", ".join(sorted(self._presets))
            raise KeyError(f"unknown {self._kind} {name!r} (known: {known})") from None

    def all(self) -> list[P]:
        return sorted(self._presets.values(), key=lambda p: p.name)

    def load(self, name: str, options: object) -> E:
        """Import the preset's module and call its loader with ``options`` (the registry's
        ``LoadOptions``). Worker process only."""
        module_name, func_name = self.get(name).loader.split(":", 1)
        factory = cast(
            Callable[[object], E], getattr(importlib.import_module(module_name), func_name)
        )
        return factory(options)
