"""The dense CRF: the lattice against exact Gaussian filtering, mean field against a brute-force
O(N²) implementation and against pydensecrf (Krähenbühl's C++ code) when installed, invariances,
input handling and validation, and its use by Segmenter, predict, evaluate and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelwise
from pixelwise.cli import main
from pixelwise.crf import CRFParams, DenseCRF, build_lattice, crf_memory_bytes
from pixelwise.crf.lattice_torch import build_lattice_torch
from pixelwise.data.io import read_image
from pixelwise.engine import Segmenter, evaluate, predict_files
from pixelwise.engine.checkpoint import ModelMeta, save_checkpoint
from pixelwise.errors import PixelwiseError
from pixelwise.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

# small kernels so that a 10×12 image has structure at several scales
TINY = CRFParams(
    iterations=5,
    gaussian_sxy=3,
    gaussian_weight=3,
    bilateral_sxy=8,
    bilateral_srgb=13,
    bilateral_weight=5,
)


def _scene(seed: int, h: int = 10, w: int = 12, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A four-region image (region colours plus noise) and noisy logits that favour the regions."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.int64)
    lab[:, w // 2 :] = 1
    lab[h // 2 :, :] += 2
    lab %= c
    palette = rng.integers(0, 256, (c, 3))
    image = np.clip(palette[lab] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = np.eye(c)[lab].transpose(2, 0, 1) * 1.5 + rng.normal(0, 1, (c, h, w))
    return image, logits.astype(np.float32)


def _brute_force(image: np.ndarray, logits: np.ndarray, p: CRFParams) -> np.ndarray:
    """Mean field with the exact kernels, in float64, O(N²): the quantities the lattice approximates.

    Like the reference code, the filtered sums include j = i and each kernel is normalised
    symmetrically, D^-1/2 K D^-1/2 with D = K·1; Potts messages are +w·K̃Q.
    """
    c, h, w = logits.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    col = image.reshape(h * w, -1).astype(np.float64)

    def kernel(f: np.ndarray) -> np.ndarray:
        k = np.exp(-((f[:, None, :] - f[None, :, :]) ** 2).sum(-1) / 2)
        n = 1 / np.sqrt(k.sum(1))
        return n[:, None] * k * n[None, :]

    kg = kernel(pos / p.gaussian_sxy)
    kb = kernel(np.concatenate([pos / p.bilateral_sxy, col / p.bilateral_srgb], 1))
    x = logits.reshape(c, -1).T.astype(np.float64)
    log_p = x - x.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    q = np.exp(log_p)
    for _ in range(p.iterations):
        z = log_p + p.gaussian_weight * kg @ q + p.bilateral_weight * kb @ q
        q = np.exp(z - z.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.T.reshape(c, h, w)


# ---------------------------------------------------------------------------------------------
# the lattice


def test_lattice_filter_approximates_a_gaussian() -> None:
    """The permutohedral lattice filters with exp(-|Δf|²/2) up to a global scale (it cancels in the
    CRF's normalisation) and a few per cent of error."""
    rng = np.random.default_rng(0)
    f = (rng.random((300, 3)) * 4).astype(np.float32)
    v = rng.random((300, 2)).astype(np.float32)
    out = build_lattice(f).filter(v)
    exact = np.exp(-((f[:, None] - f[None]) ** 2).sum(-1) / 2) @ v
    scale = (out * exact).sum() / (exact * exact).sum()
    assert 0.7 < scale < 1.0
    assert np.abs(out - scale * exact).mean() / exact.mean() < 0.05


def test_torch_lattice_equals_numba_lattice() -> None:
    rng = np.random.default_rng(1)
    f = (rng.random((500, 5)) * 6).astype(np.float32)
    v = rng.random((500, 3)).astype(np.float32)
    a = build_lattice(f)
    b = build_lattice_torch(torch.from_numpy(f))
    assert a.num_vertices == b.num_vertices
    np.testing.assert_allclose(b.filter(torch.from_numpy(v)).numpy(), a.filter(v), rtol=1e-4)


def test_wide_keys_use_the_general_builder() -> None:
    """Keys too wide to pack in an int64 (tiny widths over a huge range) take the hash table of
    key arrays; on packable features both builders give the same lattice."""
    from pixelwise.crf import lattice as lat_mod

    rng = np.random.default_rng(2)
    f = (rng.random((400, 5)) * 5).astype(np.float32)
    v = rng.random((400, 3)).astype(np.float32)
    general = lat_mod.Lattice(*lat_mod._build_general(f))
    packed = build_lattice(f)
    assert general.num_vertices == packed.num_vertices
    np.testing.assert_allclose(general.filter(v), packed.filter(v), rtol=1e-5)
    wide = (rng.random((60, 5)) * 1e5).astype(np.float32)
    assert lat_mod._packing(*lat_mod._bounds(wide)[:2]) is None
    lat = build_lattice(wide)  # isolated points: each sees its own value only
    own = lat.filter(np.ones((60, 1), np.float32))
    assert 0.1 < own.min() and own.max() < 1.0
    alone = own * v[:60]
    np.testing.assert_allclose(lat.filter(v[:60]), alone, rtol=1e-5)
    torch_wide = build_lattice_torch(torch.from_numpy(wide))  # falls back to the CPU builder
    np.testing.assert_allclose(
        torch_wide.filter(torch.from_numpy(v[:60])).numpy(), alone, rtol=1e-5
    )
    with pytest.raises(PixelwiseError, match="NaN"):
        build_lattice(np.full((3, 2), np.nan, np.float32))


# ---------------------------------------------------------------------------------------------
# mean field against references


def test_matches_brute_force_mean_field() -> None:
    """Against exact O(N²) mean field on 10×12 images: labels agree on >= 99% of pixels; mean
    |ΔQ| <= 0.005 and |ΔQ| <= 0.1 on >= 97% of pixels (the lattice's kernel errors of a few per
    cent move probabilities near decision boundaries most)."""
    agree, diffs = [], []
    for seed in range(6):
        image, logits = _scene(seed)
        ref = _brute_force(image, logits, TINY)
        out = DenseCRF(TINY)(image, logits=logits)
        agree.append(out.labels == ref.argmax(0))
        diffs.append(np.abs(out.probs - ref).max(axis=0))
    agree_all, diff_all = np.concatenate(agree, None), np.concatenate(diffs, None)
    assert agree_all.mean() >= 0.99
    assert diff_all.mean() <= 0.005
    assert (diff_all <= 0.1).mean() >= 0.97


def _pydensecrf(image, logits, p: CRFParams, compat=None):  # noqa: ANN001, ANN202
    dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 is not installed")
    c, h, w = logits.shape
    u = -torch.log_softmax(torch.from_numpy(logits), 0).numpy().reshape(c, -1)
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(u, dtype=np.float32))
    if compat is None:
        cg, cb = p.gaussian_weight, p.bilateral_weight
    else:  # pydensecrf subtracts M·K̃Q: M = w·μ
        cg = (p.gaussian_weight * compat).astype(np.float32)
        cb = (p.bilateral_weight * compat).astype(np.float32)
    d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=cg)
    d.addPairwiseBilateral(
        sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=np.ascontiguousarray(image), compat=cb
    )
    return np.array(d.inference(p.iterations)).reshape(c, h, w)


@pytest.mark.parametrize("compat", [False, True], ids=["potts", "matrix"])
def test_agrees_with_pydensecrf(compat: bool) -> None:
    rng = np.random.default_rng(3)
    image, logits = _scene(3, h=48, w=64, c=5)
    mu = None
    if compat:
        mu = rng.random((5, 5))
        mu = mu + mu.T
        np.fill_diagonal(mu, 0.0)
    p = CRFParams(
        iterations=5,
        gaussian_sxy=3,
        gaussian_weight=3,
        bilateral_sxy=20,
        bilateral_srgb=13,
        bilateral_weight=10,
        compatibility=mu,
    )
    ref = _pydensecrf(image, logits, p, mu)
    out = DenseCRF(p)(image, logits=logits)
    assert (out.labels == ref.argmax(0)).mean() >= 0.999
    np.testing.assert_allclose(out.probs, ref, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# invariances and equivalences


def test_certain_unary_stays_unchanged() -> None:
    image, logits = _scene(0)
    # probabilities exactly 0 or 1: log 0 = -inf keeps every other class impossible
    onehot = np.eye(4, dtype=np.float32)[np.argsort(logits, 0)[0]].transpose(2, 0, 1)
    out = DenseCRF(CRFParams(bilateral_weight=100.0))(image, probs=onehot)
    np.testing.assert_array_equal(out.probs, onehot)
    # one class everywhere, confidently: the CRF only agrees
    flat = np.zeros((4, 10, 12), np.float32)
    flat[2] = 5.0
    out = DenseCRF(TINY)(image, logits=flat)
    assert (out.labels == 2).all() and (out.probs[2] > 0.99).all()
    # zero iterations or zero weights: the softmax of the input
    soft = torch.softmax(torch.from_numpy(logits), 0).numpy()
    for p in (
        CRFParams(iterations=0),
        CRFParams(gaussian_weight=0.0, bilateral_weight=0.0),
    ):
        np.testing.assert_allclose(DenseCRF(p)(image, logits=logits).probs, soft, atol=1e-6)


def test_potts_equals_its_matrix_and_logits_equal_probs() -> None:
    image, logits = _scene(1)
    potts = DenseCRF(TINY)(image, logits=logits)
    mat = 1.0 - np.eye(4)
    as_matrix = DenseCRF(replace(TINY, compatibility=mat))(image, logits=logits)
    np.testing.assert_allclose(as_matrix.probs, potts.probs, atol=1e-5)
    probs = torch.softmax(torch.from_numpy(logits).double(), 0).numpy()
    np.testing.assert_allclose(DenseCRF(TINY)(image, probs=probs).probs, potts.probs, atol=1e-5)
    # shifting logits per pixel changes nothing
    shifted = logits + np.random.default_rng(0).normal(0, 3, (1, 10, 12)).astype(np.float32)
    np.testing.assert_allclose(DenseCRF(TINY)(image, logits=shifted).probs, potts.probs, atol=1e-5)


def test_dtypes_layouts_batches_and_return_types() -> None:
    image, logits = _scene(2, c=3)
    crf = DenseCRF(TINY)
    ref = crf(image, logits=logits)
    assert ref.probs.dtype == np.float32 and ref.probs.shape == (3, 10, 12)
    assert ref.labels.dtype == np.int64 and ref.labels.shape == (10, 12)
    np.testing.assert_allclose(ref.probs.sum(0), 1.0, atol=1e-5)
    # non-contiguous views, float64 / float16 / bfloat16 tensors
    hwc = np.ascontiguousarray(logits.transpose(1, 2, 0))
    img_t = np.ascontiguousarray(image.transpose(1, 0, 2)).transpose(1, 0, 2)
    view = crf(img_t, logits=hwc.transpose(2, 0, 1))
    np.testing.assert_allclose(view.probs, ref.probs, atol=1e-6)
    t = torch.from_numpy(logits)
    for dtype, atol in ((torch.float64, 1e-5), (torch.float16, 5e-3), (torch.bfloat16, 5e-2)):
        out = crf(torch.from_numpy(image), logits=t.to(dtype))
        assert isinstance(out.probs, torch.Tensor) and out.probs.dtype == torch.float32
        np.testing.assert_allclose(out.probs.numpy(), ref.probs, atol=atol)
    # a batch is each image on its own
    image2, logits2 = _scene(5, c=3)
    batch = crf(np.stack([image, image2]), logits=np.stack([logits, logits2]))
    assert batch.probs.shape == (2, 3, 10, 12) and batch.labels.shape == (2, 10, 12)
    np.testing.assert_allclose(batch.probs[0], ref.probs, atol=1e-6)
    np.testing.assert_allclose(batch.probs[1], crf(image2, logits=logits2).probs, atol=1e-6)


@pytest.mark.parametrize("classes", [2, 7, 9, 40])
def test_any_number_of_classes_and_grayscale(classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(classes, 9, 11)).astype(np.float32)
    gray = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    out = DenseCRF(TINY)(gray, logits=logits)
    assert out.probs.shape == (classes, 9, 11) and out.labels.max() < classes
    np.testing.assert_allclose(out.probs.sum(0), 1.0, atol=1e-5)
    torch_out = DenseCRF(TINY, backend="torch")(gray[..., None], logits=torch.from_numpy(logits))
    np.testing.assert_allclose(torch_out.probs.numpy(), out.probs, atol=1e-5)


def test_memory_estimate() -> None:
    small = crf_memory_bytes(100, 100, 19)
    assert crf_memory_bytes(200, 100, 19) > 1.9 * small
    assert crf_memory_bytes(100, 100, 38) > small
    assert 1.0e9 < crf_memory_bytes(2048, 2048, 19) < 2.5e9  # the figure docs/crf.md works out


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda c, im, lg: c(im.astype(np.float32), logits=lg), "dtype float32"),
        (lambda c, im, lg: c(im[:5], logits=lg), "12x5"),
        (lambda c, im, lg: c(im, logits=lg, probs=lg), "exactly one"),
        (lambda c, im, lg: c(im), "exactly one"),
        (lambda c, im, lg: c(im, probs=lg), "[0, 1]"),
        (lambda c, im, lg: c(im, probs=np.full_like(lg, 0.5)), "sums to 2"),
        (lambda c, im, lg: c(im, logits=np.where(lg > 0, np.nan, lg)), "NaN"),
        (lambda c, im, lg: c(im, logits=lg[:1]), "at least 2 classes, got 1"),
        (lambda c, im, lg: c(im, logits=lg.astype(np.int32)), "dtype int32"),
        (lambda c, im, lg: c(im, logits=lg[0]), "shape (10, 12)"),
        (lambda c, im, lg: c([im], logits=lg), "got list"),
        (lambda c, im, lg: c(np.stack([im] * 2), logits=lg[None]), "2 image(s) for 1"),
        (
            lambda c, im, lg: DenseCRF(CRFParams(compatibility=np.ones((3, 3))))(im, logits=lg),
            "3×3 but the scores have 4",
        ),
    ],
)
def test_bad_inputs_raise_one_clear_line(call, needle: str) -> None:  # noqa: ANN001
    image, logits = _scene(0)
    with pytest.raises(PixelwiseError) as err:
        call(DenseCRF(TINY), image, logits)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"iterations": -1}, "iterations must be >= 0, got -1"),
        ({"iterations": 2.5}, "integer, got 2.5"),
        ({"gaussian_sxy": 0}, "gaussian_sxy must be a positive number, got 0"),
        ({"bilateral_srgb": float("nan")}, "bilateral_srgb"),
        ({"bilateral_weight": -1.0}, "bilateral_weight must be a number >= 0, got -1.0"),
        ({"compatibility": [[0, 1, 2], [1, 0, 1]]}, "got shape (2, 3)"),
        ({"compatibility": "potts"}, "C×C matrix of numbers, got 'potts'"),
    ],
)
def test_bad_params_raise_one_clear_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(PixelwiseError) as err:
        CRFParams(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PixelwiseError, match="backend must be"):
        DenseCRF(backend="cuda")


# ---------------------------------------------------------------------------------------------
# in the product


def _checkpoint(tmp_path: Path, arch: str) -> Path:
    kwargs = {"encoder": "resnet18"} if arch == "deeplabv1" else {"base_channels": 4, "depth": 2}
    meta = ModelMeta(
        arch=arch,
        num_classes=3,
        in_channels=3,
        class_names=["a", "b", "c"],
        colors=[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs=kwargs,
    )
    torch.manual_seed(0)
    model = create_model(arch, num_classes=3, in_channels=3, **kwargs).eval()
    path = tmp_path / f"{arch}.ckpt"
    save_checkpoint(path, {"meta": meta.to_dict(), "model": model.state_dict()})
    return path


def test_segmenter_uses_crf_for_deeplabv1_by_default(tmp_path: Path) -> None:
    v1 = _checkpoint(tmp_path, "deeplabv1")
    assert Segmenter.from_checkpoint(v1, device="cpu").crf is not None
    assert pixelwise.load(v1, device="cpu", crf=False).crf is None
    unet = _checkpoint(tmp_path, "unet")
    assert Segmenter.from_checkpoint(unet, device="cpu").crf is None
    seg = Segmenter.from_checkpoint(unet, device="cpu", crf=True, crf_params=TINY)
    assert seg.crf is not None and seg.crf.params == TINY

    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    logits = seg.logits(seg.preprocess(image)[None])
    probs, labels = seg.decide(logits, image[None])
    expected = DenseCRF(TINY)(image, logits=logits[0])
    torch.testing.assert_close(probs[0], expected.probs)
    assert torch.equal(labels[0], expected.labels)
    assert np.array_equal(seg.predict(image), expected.labels.numpy().astype(np.uint8))
    np.testing.assert_allclose(
        seg.predict_proba([image, image])[1], expected.probs.numpy(), atol=1e-6
    )
    with pytest.raises(PixelwiseError, match="needs the images"):
        seg.decide(logits)


def test_sigmoid_segmenter_refines_its_two_classes() -> None:
    meta = ModelMeta(
        arch="unet",
        num_classes=2,
        in_channels=3,
        class_names=["bg", "fg"],
        colors=[[0, 0, 0], [255, 255, 255]],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs={"base_channels": 4, "depth": 2},
        output="sigmoid",
        threshold=0.3,
    )
    torch.manual_seed(0)
    model = create_model("unet", num_classes=1, in_channels=3, base_channels=4, depth=2)
    seg = Segmenter(model, meta, device="cpu", crf=DenseCRF(TINY))
    image = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    logits = seg.logits(seg.preprocess(image)[None])
    probs, labels = seg.decide(logits, image[None])
    assert probs.shape == (1, 2, 16, 20)
    expected = DenseCRF(TINY)(image, logits=torch.cat([torch.zeros_like(logits), logits], 1)[0])
    torch.testing.assert_close(probs[0], expected.probs)
    assert torch.equal(labels, (probs[:, 1] > 0.3).long())


def test_predict_and_evaluate_with_crf(tmp_path: Path, synth) -> None:  # noqa: ANN001
    ckpt = _checkpoint(tmp_path, "unet")
    masks = {f"m{i}": np.random.default_rng(i).integers(0, 3, (20, 24), np.uint8) for i in range(3)}
    root = synth.paired(masks, folder="ds")
    data = synth.yaml(
        "ds/ds.yaml",
        {
            "name": "toy",
            "root": ".",
            "classes": [{"name": n} for n in "abc"],
            "mask": {"encoding": "index"},
            "splits": {"test": {"images": "images", "masks": "masks"}},
        },
    )
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", crf=True, crf_params=TINY)
    summary = predict_files(
        seg, [str(root / "images")], tmp_path / "pred", probs=True, progress=False
    )
    assert len(summary.written) == 3 and not summary.failed
    image = read_image(root / "images" / "m0.png")
    expected = DenseCRF(TINY)(image, logits=seg.logits(seg.preprocess(image)[None])[0])
    np.testing.assert_allclose(  # predicted in a batch of three: equal up to float rounding
        np.load(tmp_path / "pred" / "m0_probs.npy"), expected.probs, rtol=1e-4, atol=1e-5
    )

    spec = pixelwise.load_dataset_spec(data)
    with_crf = evaluate(seg, spec, "test", batch_size=2, num_workers=0, progress=False)
    plain = evaluate(
        Segmenter.from_checkpoint(ckpt, device="cpu"), spec, "test", num_workers=0, progress=False
    )
    assert with_crf.crf is not None and with_crf.crf["iterations"] == 5 and plain.crf is None
    assert with_crf.confusion.matrix.sum() == plain.confusion.matrix.sum() == 3 * 20 * 24

    # the CLI: --crf / --no-crf, and the report records the CRF
    report = tmp_path / "report.json"
    main(["evaluate", "--model", str(ckpt), "--data", str(data), "--split", "test", "--crf",
          "--workers", "0", "--out", str(report), "--quiet", "--device", "cpu"])  # fmt: skip
    assert json.loads(report.read_text())["crf"]["bilateral_sxy"] == 121.0
    main(["predict", str(root / "images" / "m1.png"), "--model", str(ckpt), "--crf",
          "--out", str(tmp_path / "cli"), "--quiet", "--device", "cpu"])  # fmt: skip
    assert (tmp_path / "cli" / "m1.png").is_file()
    main(["evaluate", "--model", str(ckpt), "--data", str(data), "--split", "test", "--no-crf",
          "--workers", "0", "--out", str(report), "--quiet", "--device", "cpu"])  # fmt: skip
    assert json.loads(report.read_text())["crf"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path: Path) -> None:
    image, logits = _scene(4, h=60, w=80, c=6)
    cpu = DenseCRF(TINY)(image, logits=logits)
    gpu = DenseCRF(TINY)(torch.from_numpy(image).cuda(), logits=torch.from_numpy(logits).cuda())
    assert gpu.probs.is_cuda and gpu.labels.is_cuda
    np.testing.assert_allclose(gpu.probs.cpu().numpy(), cpu.probs, atol=1e-4)
    assert (gpu.labels.cpu().numpy() == cpu.labels).mean() >= 0.999
    seg = Segmenter.from_checkpoint(
        _checkpoint(tmp_path, "unet"), device="cuda", crf=True, crf_params=TINY
    )
    labels = seg.predict(image)
    logits_cpu = seg.logits(seg.preprocess(image)[None]).cpu()[0]
    assert (labels == DenseCRF(TINY)(image, logits=logits_cpu).labels.numpy()).mean() >= 0.999


def test_camvid_frame_agrees_with_pydensecrf(require_data) -> None:  # noqa: ANN001
    """The benchmark's setting on a real 480×360 frame (bench/crf_vs_pydensecrf.py times it)."""
    from PIL import Image

    camvid = require_data("camvid")
    name = sorted((camvid / "test").iterdir())[0].name
    image = np.asarray(Image.open(camvid / "test" / name).convert("RGB")).copy()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 360, 480)).astype(np.float32)
    p = CRFParams(5, 3, 3, 80, 13, 10)
    ref = _pydensecrf(image, logits, p)
    out = DenseCRF(p)(image, logits=logits)
    assert (out.labels == ref.argmax(0)).mean() >= 0.99
