"""A registry of classes by their ``name``: edit strategies, optimizers. Adding one is a
class with a ``name`` and the registry's decorator; duplicate names raise, unknown names
list the valid ones."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes by ``cls.name``, in registration order.

    Args:
        kind: what a class is, in the duplicate-name error (``edit strategy``).
        unknown: what a name is, in the unknown-name error (``edit type``).
        plural: the valid names' heading in that error (``types``).
    """

    def __init__(self, kind: str, unknown: str, plural: str) -> None:
        self.kind, self.unknown, self.plural = kind, unknown, plural
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` available under ``cls.name`` (names are unique)."""
        name = getattr(cls, "name", None)
        if not name or name in self._classes:
            raise ValueError(f"{self.kind} name {name!r} is empty or already registered")
        self._classes[name] = cls
        return cls

    def get(self, name: str) -> T:
        """The class registered as ``name``; KeyError lists the valid names."""
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.unknown} {name!r}; valid {self.plural}: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._classes)

    def all(self) -> dict[str, T]:
        return dict(self._classes)
