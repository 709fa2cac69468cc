"""``pixelwise serve``: the HTTP service and its web page.

::

    from pixelwise.serve import ServeSettings, create_app
    app = create_app(pixelwise.load("runs/camvid_unet/best.ckpt"), ServeSettings(max_batch=4))

:func:`create_app` needs the ``serve`` extra (FastAPI, python-multipart, prometheus-client; uvicorn to
run it): it is imported on first use, so ``import pixelwise.serve`` and the command line work
without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ServeSettings

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
