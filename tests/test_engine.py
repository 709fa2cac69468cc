"""The engine's shape: one inference path that every caller takes, one inference configuration parsed
from every place a user states it, and a package layout without import cycles or overlong functions
(docs/architecture.md)."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import toy_dataset
from PIL import Image
from torch import nn

import pixelwise
from pixelwise.crf import CRFParams
from pixelwise.engine import Segmenter, evaluate, predict_files
from pixelwise.engine.checkpoint import ModelMeta
from pixelwise.engine.inference import InferenceConfig
from pixelwise.engine.loading import LoadedModel, load_model
from pixelwise.engine.tiling import TileConfig
from pixelwise.engine.tta import TTAConfig
from pixelwise.errors import PixelwiseError

PACKAGE = Path(pixelwise.__file__).parent
SMALL_CRF = CRFParams(iterations=3, bilateral_sxy=20.0)

# The settings every caller must honour alike: whole image, sliding windows (32×32 images in
# 16-pixel windows), test-time augmentation, the dense CRF.
CONFIGS = {
    "whole": InferenceConfig(amp="off", tiling=TileConfig(mode="whole")),
    "slide": InferenceConfig(amp="off", tiling=TileConfig(mode="slide", window=16, overlap=0.5)),
    "tta": InferenceConfig(amp="off", tta=TTAConfig(flip=True, scales=(0.75, 1.0))),
    "crf": InferenceConfig(amp="off", crf=True, crf_params=SMALL_CRF),
}


def _meta() -> ModelMeta:
    return ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=3,
        class_names=["a", "b", "c"],
        colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        mean=[0.4, 0.45, 0.5],
        std=[0.2, 0.25, 0.3],
        model_kwargs={"base_channels": 4, "depth": 2},
    )


def _loaded() -> LoadedModel:
    """Two 3×3 convolutions: enough context that windows, scales and flips change the logits, and
    labels of all three classes on the toy image."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    return LoadedModel(model.eval(), _meta())


def _unet() -> LoadedModel:
    """A registered architecture (checkpoints and bundles rebuild it from its name)."""
    torch.manual_seed(0)
    meta = _meta()
    model = pixelwise.create_model("unet", num_classes=3, in_channels=3, **meta.model_kwargs)
    return LoadedModel(model.eval(), meta)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every output of ``Segmenter.logits``, the one inference path, as the callers produce it."""
    out: list[torch.Tensor] = []
    real = Segmenter.logits

    def spy(self: Segmenter, batch: torch.Tensor) -> torch.Tensor:
        logits = real(self, batch)
        out.extend(t.detach().cpu().clone() for t in logits)
        return logits

    monkeypatch.setattr(Segmenter, "logits", spy)
    return out


def _served_labels(seg: Segmenter, png: bytes) -> np.ndarray:
    from fastapi.testclient import TestClient

    from pixelwise.serve.app import create_app

    with TestClient(create_app(seg)) as client:
        r = client.post("/v1/segment", content=png, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_caller_gets_the_same_logits_and_labels(
    name: str, tmp_path: Path, recorded: list[torch.Tensor]
) -> None:
    """evaluate, predict, serve and training's validation reach logits through one function: for
    one image and one configuration they see bit-identical logits, and the labels they derive
    (mask file, served PNG, confusion matrix) agree."""
    pytest.importorskip("fastapi")
    from pixelwise.engine.train import validation_segmenter

    root = toy_dataset(tmp_path / "data", n=1)
    image_path = root / "images" / "im0.png"
    truth = np.asarray(Image.open(root / "masks" / "im0.png"))
    seg = Segmenter(_loaded(), config=CONFIGS[name], device="cpu")
    spec = pixelwise.load_dataset_spec(root)

    result = evaluate(seg, spec, "all", batch_size=1, num_workers=0, progress=False)
    predict_files(seg, [str(image_path)], tmp_path / "out", num_workers=0, progress=False)
    predicted = np.asarray(Image.open(tmp_path / "out" / "im0.png"))
    served = _served_labels(seg, image_path.read_bytes())
    val = validation_segmenter(seg.model, seg.meta, seg.device, seg.config)
    val.logits(val.preprocess(np.asarray(Image.open(image_path)))[None])

    assert len(recorded) == 4  # evaluate, predict, serve, validation: one image each
    for other in recorded[1:]:
        assert torch.equal(recorded[0], other)
    np.testing.assert_array_equal(predicted, served)
    expected = np.zeros((3, 3), np.int64)
    np.add.at(expected, (truth.ravel(), predicted.ravel()), 1)
    np.testing.assert_array_equal(result.confusion.matrix.numpy(), expected)
    assert len(np.unique(predicted)) > 1  # a test that would pass on a constant map proves little


def test_training_validation_scores_like_evaluate(
    tmp_path: Path, recorded: list[torch.Tensor]
) -> None:
    """Training's validation step (its own loader, the network being trained) goes through the one
    path too: the same logits and the same confusion matrix as ``evaluate`` under the configuration
    validation runs (the training precision, no TTA, no CRF)."""
    import importlib

    from pixelwise.config import RunConfig

    train_mod = importlib.import_module("pixelwise.engine.train")

    root = toy_dataset(tmp_path / "data", n=3)
    cfg = RunConfig(
        data={"dataset": str(root), "train_split": "all", "val_split": "all"},
        model={"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        train={"epochs": 1, "batch_size": 2, "eval_batch_size": 2, "num_workers": 0, "amp": "off"},
    )
    state = train_mod.setup(cfg, tmp_path / "run", progress=False)
    scores = train_mod.validate(state).scores
    from_validation = list(recorded)
    seg = Segmenter(
        LoadedModel(state.net, state.meta), config=train_mod.validation_config(cfg), device="cpu"
    )
    result = evaluate(seg, state.spec, "all", batch_size=2, num_workers=0, progress=False)
    from_evaluate = recorded[len(from_validation) :]
    assert len(from_validation) == len(from_evaluate) == 3
    for a, b in zip(from_validation, from_evaluate, strict=True):
        assert torch.equal(a, b)
    assert scores.miou == result.scores.miou


def test_the_configurations_really_differ(tmp_path: Path) -> None:
    """The cases above are four different predictions, not one path under four names."""
    image = np.asarray(Image.open(toy_dataset(tmp_path, n=1) / "images" / "im0.png"))
    loaded = _loaded()
    logits = {
        name: Segmenter(loaded, config=cfg, device="cpu").image_logits(image)
        for name, cfg in CONFIGS.items()
        if name != "crf"
    }
    assert not torch.allclose(logits["whole"], logits["slide"])
    assert not torch.allclose(logits["whole"], logits["tta"])
    crf = Segmenter(loaded, config=CONFIGS["crf"], device="cpu")
    plain = Segmenter(loaded, config=CONFIGS["whole"], device="cpu")
    assert not np.array_equal(crf.predict(image), plain.predict(image))


# ---- one configuration, parsed from everywhere ---------------------------------------------------


def test_cli_options_and_query_parameters_parse_into_the_same_configuration() -> None:
    cli = InferenceConfig.from_options(tta=True, tile="slide", window=256, crf=False)
    query = InferenceConfig().with_options(crf=False, tta=True, tile="slide", window=256)
    assert cli == query and hash(cli) == hash(query)
    assert cli.tta == TTAConfig() and cli.tiling == TileConfig(mode="slide", window=256)
    # unset options keep the dataclasses' defaults: one home for each default
    assert InferenceConfig.from_options() == InferenceConfig()
    assert InferenceConfig.from_options(tta_scales="1,1.5").tta == TTAConfig(scales=(1.0, 1.5))
    assert cli.with_options(tta=False).tta is None


def test_a_bundle_records_its_configuration() -> None:
    cfg = InferenceConfig.recorded({"amp": "bf16", "check": {}, "crf": {"iterations": 2}})
    assert cfg.amp == "bf16" and cfg.crf_params == CRFParams(iterations=2)
    assert InferenceConfig.recorded(None) == InferenceConfig(amp="off")


def test_a_bundles_recorded_crf_parameters_are_used(tmp_path: Path) -> None:
    from pixelwise.engine import write_bundle

    inference = {"amp": "bf16", "check": {"note": "test"}, "crf": {"iterations": 2}}
    path = write_bundle(_unet(), tmp_path, "c", dtype="float32", inference=inference)
    seg = Segmenter(load_model(path), config=InferenceConfig(crf=True), device="cpu")
    assert seg.crf is not None and seg.crf.params == CRFParams(iterations=2)
    own = Segmenter(load_model(path), config=InferenceConfig(crf=True, crf_params=SMALL_CRF))
    assert own.crf.params == SMALL_CRF  # what the user states wins over the record
    with pytest.raises(PixelwiseError, match="inference crf") as err:
        write_bundle(_unet(), tmp_path, "d", inference={**inference, "crf": {"iterations": -1}})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"amp": "fp8"}, "amp 'fp8'"),
        ({"tile": "sideways"}, "sideways"),
        ({"overlap": 1.5}, "overlap"),
        ({"tta_scales": "big"}, "--tta-scales"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(PixelwiseError, match=message) as err:
        InferenceConfig.from_options(**options)
    assert "\n" not in str(err.value)


def test_a_variant_shares_the_model_and_keeps_the_crf_parameters() -> None:
    """The service's per-request variants: the network is shared, the CRF keeps its parameters
    (it used to fall back to DeepLab v1's defaults)."""
    seg = Segmenter(
        _loaded(), config=InferenceConfig(crf=False, crf_params=SMALL_CRF), device="cpu"
    )
    variant = seg.with_config(seg.config.with_options(crf=True))
    assert variant.model is seg.model
    assert variant.crf is not None and variant.crf.params == SMALL_CRF
    assert seg.crf is None and seg.config.crf is False


def test_load_model_dispatches_on_the_source(tmp_path: Path) -> None:
    from pixelwise.engine import save_checkpoint, write_bundle

    loaded = _unet()
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(ckpt, {"meta": loaded.meta.to_dict(), "model": loaded.model.state_dict()})
    bundle = write_bundle(loaded, tmp_path, "m", dtype="float32")
    from_ckpt, from_bundle = load_model(ckpt), load_model(bundle)
    assert from_ckpt.info is None and from_bundle.info["name"] == "m"
    x = torch.randn(1, 3, 24, 24)
    torch.testing.assert_close(from_ckpt.model(x), from_bundle.model(x))
    with pytest.raises(PixelwiseError, match="not found"):
        load_model(tmp_path / "missing.ckpt")


# ---- the package's shape -------------------------------------------------------------------------


def _modules(folder: str) -> dict[str, ast.Module]:
    return {
        p.stem: ast.parse(p.read_text(encoding="utf-8"))
        for p in sorted((PACKAGE / folder).glob("*.py"))
        if p.stem != "__init__"
    }


@pytest.mark.parametrize("folder", ["engine", "serve"])
def test_no_function_is_longer_than_120_lines(folder: str) -> None:
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in _modules(folder).items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 120
    ]
    assert not long


def test_engine_modules_import_each_other_without_cycles() -> None:
    """Every import between engine modules counts, also those inside functions; only imports for
    type checkers (``if TYPE_CHECKING:``) do not."""
    modules = _modules("engine")
    graph = {name: set() for name in modules}
    for name, tree in modules.items():
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                graph[name].update(t.split(".")[0] for t in targets if t.split(".")[0] in graph)

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in graph[path[-1]]:
            if nxt == start:
                return [*path, nxt]
            if nxt not in path:
                found = cycle_from(start, [*path, nxt])
                if found:
                    return found
        return None

    cycles = [c for name in graph if (c := cycle_from(name, [name]))]
    assert not cycles, " → ".join(cycles[0])


# ---- thin images: whole vs windows on the padded size (issue 19) ---------------------------------


class _PaddingSpy(nn.Module):
    """A per-pixel model that pads its input to a multiple of 32, as the real ones do, and
    records how many pixels each forward pass computes on."""

    input_multiple = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.pixels: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from pixelwise.layers import pad_to_multiple

        h, w = x.shape[-2:]
        padded, _ = pad_to_multiple(x, self.input_multiple)
        self.pixels.append(padded.shape[0] * padded.shape[-2] * padded.shape[-1])
        return self.conv(padded)[..., :h, :w]


def test_a_thin_image_is_predicted_in_windows_of_bounded_padded_size() -> None:
    """An 8 × 200,000 image is 1.6 M pixels but 6.4 M once padded to 32 rows: beyond the default
    4 M-pixel whole-image limit, so it goes in windows, and no forward pass computes on more than
    a window batch's padded pixels (it used to be one pass over the whole padded strip)."""
    spy = _PaddingSpy().eval()
    seg = Segmenter(spy, _meta(), config=InferenceConfig(amp="off"), device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (8, 200_000, 3), np.uint8)
    assert seg.padded_pixels(8, 200_000) == 32 * 200_000
    labels = seg.predict(image)
    assert labels.shape == (8, 200_000)
    tiling = seg.config.tiling
    assert max(spy.pixels) <= tiling.batch_size * 32 * tiling.window
    np.testing.assert_array_equal(labels, seg.with_config(CONFIGS["whole"]).predict(image))
    # a square image of the same pixel count is still predicted whole, in one pass
    spy.pixels.clear()
    seg.predict(np.zeros((448, 448, 3), np.uint8))
    assert spy.pixels == [448 * 448]


def test_an_absurdly_thin_image_is_refused_in_one_line(tmp_path: Path) -> None:
    """1 × 1,000,000 pixels is 32 M pixels to a stride-32 model: refused before any forward pass,
    in one line that says what to do (it took 125 s and 3 GB before)."""
    spy = _PaddingSpy().eval()
    seg = Segmenter(spy, _meta(), config=InferenceConfig(amp="off"), device="cpu")
    with pytest.raises(PixelwiseError, match="too thin") as err:
        seg.predict(np.zeros((1, 1_000_000, 3), np.uint8))
    assert "\n" not in str(err.value) and spy.pixels == []
    seg.predict(np.zeros((16, 200_000, 3), np.uint8))  # padded 2× only: windows, no refusal
    assert max(spy.pixels) <= seg.tiling.batch_size * 32 * seg.tiling.window


def test_auto_tiling_compares_the_padded_size() -> None:
    auto = TileConfig(max_whole_pixels=64 * 64)
    assert not auto.use_slide(64, 64, 32)
    assert auto.use_slide(1, 4096, 32)  # 32 × 4096 padded
    assert not auto.use_slide(1, 4096)  # a model that does not pad


def test_the_description_mentions_windows_only_when_they_can_be_used() -> None:
    """`evaluate` printed "tiling auto: 512-pixel windows" for splits scored whole (issue 20)."""
    assert InferenceConfig(amp="off").describe() == ""
    assert InferenceConfig(amp="bf16").describe() == "autocast bf16"
    slide = InferenceConfig.from_options(tile="slide", window=256).describe()
    assert slide.startswith("tiling slide: 256-pixel windows")
    auto = InferenceConfig.from_options(max_whole_pixels=1000).describe()
    assert auto.startswith("tiling auto: whole up to 1,000 pixels, then 512-pixel windows")


def test_the_service_answers_an_absurdly_thin_upload_422_in_one_line() -> None:
    """The 1 × 4,000,000 PNG that drove the server to 9.8 GB: now refused before any forward pass."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pixelwise.serve.app import create_app

    spy = _PaddingSpy().eval()
    seg = Segmenter(spy, _meta(), config=InferenceConfig(amp="off"), device="cpu")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 4_000_000, 3), np.uint8)).save(buf, format="PNG")
    with TestClient(create_app(seg)) as client:
        r = client.post(
            "/v1/segment", content=buf.getvalue(), headers={"Content-Type": "image/png"}
        )
    assert r.status_code == 422 and "too thin" in r.json()["error"]
    assert spy.pixels == []
