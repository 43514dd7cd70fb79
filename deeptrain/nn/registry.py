"""One registry per kind of name (activation, initializer, schedule, ...).

A registry maps lower-case names to factories. Lookups normalize the name
(case, dashes) and fail with the list of valid names, so a typo in a YAML file
is a one-line fix rather than a traceback.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


def normalize_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Named factories of one kind, e.g. ``Registry("activation")``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        def add(factory: T) -> T:
            for name in names:
                key = normalize_name(name)
                if key in self._entries:
                    raise KeyError(f"{self.kind} {key!r} is registered twice")
                self._entries[key] = factory
            return factory

        return add

    def add(self, name: str, factory: T) -> None:
        self.register(name)(factory)

    def get(self, name: str) -> T:
        key = normalize_name(name)
        if key not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            )
        return self._entries[key]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._entries

    def __iter__(self) -> Iterable[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
