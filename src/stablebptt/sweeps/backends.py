"""Where a sweep's groups train: this process (:class:`LocalBackend`) or a Ray cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from ..runs import resume
from .groups import train_group
from .spec import Run

__all__ = ["BACKENDS", "Backend", "LocalBackend", "make_backend"]

BACKENDS = ("local", "ray")
"""The names :func:`make_backend` takes."""


class Backend(Protocol):
    """Where a sweep's groups train.

    :meth:`train_groups` trains ``groups`` into their run directories under
    ``out``, calls ``progress(group, n)`` for ``n`` more finished run-epochs
    of ``group``, and yields each group once all its runs are written. It
    raises :class:`~.groups.GroupsFailedError` at the end if some groups failed.
    """

    def train_groups(
        self, groups: Sequence[list[Run]], out: Path, *, batched: bool, progress: Callable[[list[Run], int], None]
    ) -> Iterator[list[Run]]: ...


@dataclasses.dataclass(frozen=True)
class LocalBackend:
    """Train the groups in this process, one after another, saving each every ``checkpoint_every`` epochs."""

    checkpoint_every: int = resume.DEFAULT_EVERY

    def train_groups(
        self, groups: Sequence[list[Run]], out: Path, *, batched: bool, progress: Callable[[list[Run], int], None]
    ) -> Iterator[list[Run]]:
        for group in groups:
            progress(group, 0)  # shows the group while it compiles
            train_group(
                group, out, batched=batched, on_epochs=lambda n, g=group: progress(g, n), checkpoint_every=self.checkpoint_every
            )
            yield group


def make_backend(name: str, **options: Any) -> Backend:
    """``"local"`` → :class:`LocalBackend`; ``"ray"`` → ``RayBackend(**options)`` (e.g. ``address=``)."""
    if name == "local":
        if set(options) - {"checkpoint_every"}:
            raise ValueError(f"the local backend takes only checkpoint_every (got {', '.join(sorted(options))})")
        return LocalBackend(**options)
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend(**options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


