"""The ``pixelwise serve`` command: load the model once, then run the app with uvicorn.

Registered in :mod:`pixelwise.cli` as ``app.command("serve")(serve_command)``. Only typer and the
standard library are imported here; FastAPI and uvicorn are imported when the command runs, so the
rest of the command line works without the ``serve`` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .._options import DeviceOption, inference_options
from ..engine.inference import InferenceConfig
from ..errors import PixelwiseError
from ..pretrained import DEFAULT_MODEL
from .settings import ServeSettings, is_loopback

__all__ = ["serve_command"]

log = logging.getLogger("pixelwise.serve")

_SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart", "prometheus_client")


# The hardening flags (issue 19), typed here to keep serve_command's signature short.
_UploadsPerClient = Annotated[
    int,
    typer.Option(help="Most uploads read at once from one client address; more wait (0: no cap)."),
]
_UploadMemory = Annotated[
    float,
    typer.Option(
        help="Most MiB of request bodies held at once (at least one largest upload); then 503."
    ),
]
_DecodeMemory = Annotated[
    float,
    typer.Option(
        help="Most MiB of decoding work and decoded images at once (estimated from each image's "
        "header); a request waits for room."
    ),
]
HostOption = Annotated[
    str,
    typer.Option(
        help="Address to bind; beyond loopback it needs a token (or --insecure-no-token)."
    ),
]
InsecureNoToken = Annotated[
    bool,
    typer.Option(
        "--insecure-no-token",
        help="Serve a non-loopback --host without a token: anyone who reaches it can use it.",
    ),
]


def _model_name(model: str) -> str:
    """What ``/v1/models`` calls the model: a bundled name as is, a file by its name."""
    return Path(model).name if any(c in model for c in "/\\.") else model


def require_serve_extra() -> None:
    import importlib.util

    missing = [m for m in _SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise PixelwiseError(
            f"pixelwise serve needs the serve extra ({', '.join(missing)} missing): "
            "pip install 'pixelwise[serve]'"
        )


@inference_options
def serve_command(
    model: Annotated[
        str,
        typer.Option(
            help="Bundled model name, checkpoint (.ckpt), bundle (.json) or exported model (.onnx)."
        ),
    ] = DEFAULT_MODEL,
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PIXELWISE_TOKEN",
            help="Bearer token every endpoint but /healthz and the web page requires (or env "
            "PIXELWISE_TOKEN, better: a command line is visible to other users).",
            show_default=False,
            show_envvar=False,
        ),
    ] = None,
    device: DeviceOption = "auto",
    inference: InferenceConfig | None = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            help="Most same-size images in one forward pass [default: 8 on CUDA, 1 on the CPU, "
            "where batching measured slower per image: docs/serve.md].",
            show_default=False,
        ),
    ] = None,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a request waits for others to share its batch.")
    ] = 5.0,
    queue_size: Annotated[
        int, typer.Option(help="Most requests waiting beyond the running batch; then 503.")
    ] = 32,
    timeout: Annotated[
        float, typer.Option(help="Seconds a request may wait for its prediction; then 504.")
    ] = 30.0,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload in MiB; then 413.")] = 32.0,
    max_pixels: Annotated[
        int, typer.Option(help="Largest image (width × height); then 413, before decoding.")
    ] = 4096 * 4096,
    max_regions: Annotated[
        int, typer.Option(help="Most regions a JSON answer lists (the largest).")
    ] = 1000,
    max_uploads_per_client: _UploadsPerClient = 8,
    upload_memory_mb: _UploadMemory = 256.0,
    decode_memory_mb: _DecodeMemory = 1024.0,
    insecure_no_token: InsecureNoToken = False,
    log_level: Annotated[
        str, typer.Option(help="uvicorn's log level: critical, error, warning, info, debug.")
    ] = "info",
) -> None:
    """Serve a model over HTTP: POST /v1/segment, GET /v1/models, /healthz, /readyz, /metrics,
    and a web page at /."""
    require_serve_extra()
    if not token and not is_loopback(host) and not insecure_no_token:
        raise PixelwiseError(
            f"--host {host} is not a loopback address and there is no token: set "
            "PIXELWISE_TOKEN (or --token), or pass --insecure-no-token to serve it to anyone"
        )
    if max_batch is None:
        from ..engine.runtime import resolve_device

        max_batch = 8 if resolve_device(device).type == "cuda" else 1
    settings = ServeSettings(
        model_name=_model_name(model),
        token=token,
        host=host,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        queue_size=queue_size,
        timeout=timeout,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        max_regions=max_regions,
        max_uploads_per_client=max_uploads_per_client,
        upload_memory_mb=upload_memory_mb,
        decode_memory_mb=decode_memory_mb,
    )
    if not 0 < port < 65536:
        raise PixelwiseError(f"--port {port}: expected 1..65535")

    import uvicorn

    from ..engine import Segmenter
    from .app import create_app
    from .protocol import JsonErrorsH11Protocol

    seg = Segmenter.from_checkpoint(model, device=device, config=inference)
    if settings.token is None and not is_loopback(host):
        log.warning(
            "serving on %s without a token (--insecure-no-token): anyone who can reach port %d "
            "can use the model",
            host,
            port,
        )
    uvicorn.run(
        create_app(seg, settings),
        host=host,
        port=port,
        log_level=log_level,
        workers=1,
        server_header=False,
        http=JsonErrorsH11Protocol,
    )
