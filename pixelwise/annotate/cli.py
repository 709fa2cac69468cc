"""The ``pixelwise annotate`` command: open a dataset in the annotation app, served with uvicorn.

Registered in :mod:`pixelwise.cli` as ``app.command("annotate")(annotate_command)``. FastAPI and
uvicorn are imported when the command runs (the ``serve`` extra), so the rest of the command line
works without them.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated

import typer

from .._options import DeviceOption
from ..errors import PixelwiseError
from ..serve.cli import HostOption, InsecureNoToken, require_serve_extra
from ..serve.settings import is_loopback

__all__ = ["annotate_command"]

log = logging.getLogger("pixelwise.annotate")


def annotate_command(
    data: Annotated[Path, typer.Argument(help="The dataset: a YAML file or a folder.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="A model to pre-label with and rank the unlabelled images by (bundled name, "
            ".ckpt, bundle .json or .onnx); its classes must be the dataset's."
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Folder the labels are saved in, in the dataset's encoding "
            "[default: pixelwise-labels/<dataset name>]."
        ),
    ] = None,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place",
            help="Save into the dataset's own mask files instead (earlier versions are kept in "
            "<root>/.pixelwise-history).",
        ),
    ] = False,
    split: Annotated[
        list[str] | None, typer.Option(help="Split(s) to annotate [default: all].")
    ] = None,
    uncertainty: Annotated[
        str, typer.Option(help="Ranking and heat map: entropy, margin or least_confident.")
    ] = "entropy",
    rank: Annotated[
        bool, typer.Option(help="Rank the unlabelled images by the model's uncertainty at start.")
    ] = True,
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8010,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PIXELWISE_TOKEN",
            help="Bearer token of the API (or env PIXELWISE_TOKEN); beyond loopback without one, "
            "a random token is made and printed in the page's address.",
            show_default=False,
            show_envvar=False,
        ),
    ] = None,
    insecure_no_token: InsecureNoToken = False,
    device: DeviceOption = "auto",
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
) -> None:
    """Label a dataset in the browser: brush, eraser, polygon, flood fill, smart brush, a model's
    pre-labels and uncertainty, autosave in the dataset's own mask encoding, edit history."""
    require_serve_extra()
    if in_place and labels is not None:
        raise PixelwiseError("--in-place and --labels: choose one place to save")
    if not 0 < port < 65536:
        raise PixelwiseError(f"--port {port}: expected 1..65535")
    if not token and not is_loopback(host) and not insecure_no_token:
        token = secrets.token_urlsafe(18)

    import uvicorn

    from ..data.spec import load_dataset_spec
    from .app import AnnotateSettings, create_annotate_app
    from .store import LabelStore

    spec = load_dataset_spec(data)
    if not in_place and labels is None:
        labels = Path("pixelwise-labels") / spec.name
    store = LabelStore(spec, labels, in_place=in_place, splits=split or None)
    seg = None
    if model is not None:
        from ..engine import Segmenter

        seg = Segmenter.from_checkpoint(model, device=device)
    settings = AnnotateSettings(token=token, host=host, uncertainty=uncertainty, rank=rank)
    app = create_annotate_app(store, seg, settings)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    where = "the dataset's mask files" if in_place else str(labels)
    typer.echo(
        f"annotating {len(store.items)} images of {spec.name} ({spec.mask.codec.name} masks → "
        f"{where}); open {url}" + (f"#token={token}" if token else "")
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, server_header=False)
