"""What a command was doing when the disk or the memory ran out: the loop and the commands mark their stages
(`doing`), and the commands' one handler for disk and memory errors (experiments/cli.py) names the stage an error
escaped from. Standard library only, and no effect at import: the handler reads it before the slow imports."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_STAGE: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar("selectivity_jax_stage",
                                                                                     default=None)
_ATTRIBUTE = "_selectivity_jax_stage"


@contextlib.contextmanager
def doing(what: str, path: str | None = None) -> Iterator[None]:
    """Marks the block as ``what`` (e.g. "writing a checkpoint"), writing under ``path`` if given; an exception
    leaving the block remembers the innermost stage it escaped from (`stage_of`)."""
    token = _STAGE.set((what, path))
    try:
        yield
    except BaseException as error:
        if getattr(error, _ATTRIBUTE, None) is None:
            try:
                setattr(error, _ATTRIBUTE, (what, path))
            except (AttributeError, TypeError):  # an exception type without instance attributes
                pass
        raise
    finally:
        _STAGE.reset(token)


def stage_of(error: BaseException | None = None) -> tuple[str, str | None]:
    """(what, path) of the stage ``error`` (or one in its chain) escaped from, else the current stage, else
    ("starting", None)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        stage = getattr(error, _ATTRIBUTE, None)
        if stage is not None:
            return stage
        error = error.__cause__ or error.__context__
    return _STAGE.get() or ("starting", None)
