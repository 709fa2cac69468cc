"""User-facing errors.

Everything a user can get wrong (a path, a value in a YAML file, a corrupt image) raises
:class:`PixelwiseError` with one line naming the file or value and the reason. The CLI prints that
line and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

__all__ = ["PixelwiseError", "pydantic_message"]


class PixelwiseError(ValueError):
    """A problem with user input: the message names the file or value and the reason."""


def pydantic_message(exc: Exception, where: str) -> str:
    """One line from a pydantic ``ValidationError``: ``where: field.path: message; ...``."""
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    return f"{where}: " + "; ".join(parts)
