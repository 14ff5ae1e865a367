"""One way to find every swappable part: a ``Registry`` per kind (task, objective, prior, autoencoder,
network), filled with a ``register`` decorator and read with ``build(name, ...)``, as timm's
``create_model`` works.

A registry is open to user code: a module of your own registers a network or an objective, and a run
names it in its config (``imports: [my_module]`` makes the CLI import that module first). Entries may be
given as ``"module:attribute"`` strings, imported on first use, so heavy optional parts (diffusers models)
cost nothing until a run asks for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

from latentdistill.errors import LatentDistillError


class Registry:
    """Names -> builders (a class or a function), each with optional tags (e.g. a network's task)."""

    def __init__(self, kind: str, config_key: str | None = None):
        self.kind = kind  # "network", "objective", ...: how errors name an entry
        self.config_key = config_key  # the config key that names an entry, for error messages
        self._entries: dict[str, Callable[..., Any] | str] = {}
        self._tags: dict[str, dict[str, Any]] = {}

    def register(self, name: str, builder: Callable[..., Any] | str | None = None, **tags: Any):
        """``@registry.register("name", task="sr")`` above a class or function, or
        ``registry.register("name", "package.module:attribute")`` for a lazily imported one."""
        if not name or not isinstance(name, str):
            raise LatentDistillError(f"a {self.kind} needs a non-empty string name, got {name!r}")

        def add(target: Callable[..., Any] | str) -> Callable[..., Any] | str:
            self._entries[name] = target
            self._tags[name] = dict(tags)
            return target

        return add if builder is None else add(builder)

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``; a one-line error listing the known names otherwise."""
        if name not in self._entries:
            where = f"config key '{self.config_key}': " if self.config_key else ""
            raise LatentDistillError(f"{where}unknown {self.kind} '{name}' (known: {', '.join(self.names())})")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, path = entry.partition(":")
            try:
                entry = importlib.import_module(module)
                for attribute in path.split("."):
                    entry = getattr(entry, attribute)
            except (ImportError, AttributeError) as error:
                raise LatentDistillError(f"{self.kind} '{name}' cannot be loaded from '{self._entries[name]}' "
                                         f"({type(error).__name__}: {error})") from None
            self._entries[name] = entry
        return entry

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def tags(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._tags[name])

    def names(self, **tags: Any) -> list[str]:
        """Sorted names, optionally only those whose tags match (``names(task="sr")``)."""
        return sorted(n for n in self._entries if all(self._tags[n].get(k) == v for k, v in tags.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_user_modules(modules: list[str]) -> None:
    """Import the modules a config names under ``imports``, so that what they register can be built."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # the user's module: its own SyntaxError or NameError, in one line too
            raise LatentDistillError(f"config key 'imports': cannot import '{name}' ({type(error).__name__}: "
                                     f"{str(error).splitlines()[0] if str(error) else ''})") from None
