"""User-facing errors.

Everything a user can get wrong (a path, a value in a YAML file, a corrupt image) raises
:class:`PixelwiseError` with one line naming the file or value and the reason. The CLI prints that
line and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

__all__ = ["PixelwiseError", "first_line", "printable", "pydantic_message"]


class PixelwiseError(ValueError):
    """A problem with user input: the message names the file or value and the reason."""


def pydantic_message(exc: Exception, where: str) -> str:
    """One line from a pydantic ``ValidationError``: ``where: field.path: message; ...``."""
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    return f"{where}: " + "; ".join(parts)


def first_line(exc: BaseException, *, last: bool = False, default: str | None = None) -> str:
    """One line of an exception's message for a one-line error: its first (or, with ``last``, its
    last) non-empty line; ``default`` (else the exception's type name) when the message is empty.
    Third-party libraries raise multi-line messages; a user sees one line of them."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return default if default is not None else type(exc).__name__
    return lines[-1] if last else lines[0]


def printable(text: object) -> str:
    """``text`` with undecodable file-name bytes (surrogate escapes) shown as ``\\xNN``: a file name
    that is not UTF-8 must not turn a message into a UnicodeEncodeError."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
