"""The fully connected CRF of Krähenbühl and Koltun, with mean-field inference.

Krähenbühl and Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials",
NIPS 2011; used by DeepLab v1 (Chen et al., ICLR 2015) to sharpen its coarse score maps.

The energy of a labelling ``x`` of the N pixels of an image is::

    E(x) = Σ_i U_i(x_i) + Σ_{i<j} μ(x_i, x_j) [ w_g k_g(i, j) + w_b k_b(i, j) ]
    k_g(i, j) = exp(-|p_i - p_j|² / 2 sxy_g²)                                  smoothness
    k_b(i, j) = exp(-|p_i - p_j|² / 2 sxy_b² - |I_i - I_j|² / 2 srgb²)          appearance

with ``U = -log P`` from the network, ``p`` pixel positions and ``I`` colours. Mean-field inference
iterates ``Q_i(l) ∝ exp(-U_i(l) - Σ_m w_m Σ_l' μ(l, l') [K̃_m Q](i, l'))``, where ``K̃_m`` is kernel m
filtered in a permutohedral lattice (:mod:`pixelwise.crf.lattice`) and symmetrically normalised,
``K̃ = D^-1/2 K D^-1/2`` with ``D`` the lattice-filtered row sums, as in the reference implementation
(``NORMALIZE_SYMMETRIC``, its default). With the Potts model ``μ = 1 - I`` the message reduces to
``+w_m [K̃_m Q](i, l)``, which is what is computed.

Every detail that changes the output follows the reference C++ code (Krähenbühl's ``densecrf``, as
shipped by pydensecrf): features ``(x/sxy, y/sxy[, r/srgb, g/srgb, b/srgb])`` in that order, float32
lattice embedding, the [1/2, 1, 1/2] blur, the ``1 / (1 + 2^-d)`` slice scale and the normalisation.
A user compatibility matrix is symmetrised, as there.

On CPU arrays and tensors the lattice runs in numba; on CUDA tensors in PyTorch
(:mod:`pixelwise.crf.lattice_torch`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
import torch

from ..errors import PixelwiseError
from .lattice import build_lattice, filter_into

__all__ = ["CRFParams", "CRFResult", "DenseCRF", "crf_memory_bytes", "dense_crf"]

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class CRFParams:
    """Parameters of the dense CRF. The defaults are DeepLab v1's (DeepLab-LargeFOV's released
    ``run_pascal.sh``: ``bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3, pos_xy_std=3``, 10 mean-field
    iterations; the paper fixes ``w_g = 3, σ_γ = 3`` and cross-validates the bilateral kernel).

    Attributes:
        iterations: mean-field iterations (0 returns the input probabilities).
        gaussian_sxy: width of the smoothness kernel, in pixels (σ_γ).
        gaussian_weight: its weight w_g (pydensecrf's ``compat`` of ``addPairwiseGaussian``).
        bilateral_sxy: spatial width of the appearance kernel, in pixels (σ_α).
        bilateral_srgb: colour width of the appearance kernel, in intensity levels 0-255 (σ_β).
        bilateral_weight: its weight w_b (pydensecrf's ``compat`` of ``addPairwiseBilateral``).
        compatibility: class compatibility μ, a C×C matrix (symmetrised: only μ + μᵀ matters), as
            nested sequences; ``None`` is the Potts model μ(l, l') = [l ≠ l'].
    """

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_weight: float = 3.0
    bilateral_sxy: float = 121.0
    bilateral_srgb: float = 5.0
    bilateral_weight: float = 4.0
    compatibility: tuple[tuple[float, ...], ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int | np.integer):
            raise PixelwiseError(f"CRF iterations must be an integer, got {self.iterations!r}")
        if self.iterations < 0:
            raise PixelwiseError(f"CRF iterations must be >= 0, got {self.iterations}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            v = getattr(self, name)
            if not _is_real(v) or not math.isfinite(v) or v <= 0:
                raise PixelwiseError(f"CRF {name} must be a positive number, got {v!r}")
        for name in ("gaussian_weight", "bilateral_weight"):
            v = getattr(self, name)
            if not _is_real(v) or not math.isfinite(v) or v < 0:
                raise PixelwiseError(f"CRF {name} must be a number >= 0, got {v!r}")
        if self.compatibility is not None:
            try:
                mat = np.asarray(self.compatibility, dtype=np.float64)
            except (TypeError, ValueError):
                raise PixelwiseError(
                    f"CRF compatibility must be a C×C matrix of numbers, got {self.compatibility!r}"
                ) from None
            if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] < 2:
                raise PixelwiseError(
                    f"CRF compatibility must be a square C×C matrix (C >= 2), got shape {mat.shape}"
                )
            if not np.isfinite(mat).all():
                raise PixelwiseError("CRF compatibility matrix holds NaN or infinite values")
            object.__setattr__(self, "compatibility", tuple(tuple(r) for r in mat.tolist()))


@dataclass
class CRFResult:
    """Refined class probabilities and labels, of the kind the scores came as (numpy, or torch on
    their device).

    Shape:
        probs: (C, H, W) float32, or (N, C, H, W) for a batch.
        labels: (H, W) int64, or (N, H, W).
    """

    probs: Array
    labels: Array


def _is_real(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def _as_tensor(x: Array, name: str) -> torch.Tensor:
    """A tensor view of ``x`` (a copy only for negative strides or a non-native byte order)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if not isinstance(x, np.ndarray):
        raise PixelwiseError(
            f"CRF {name} must be a numpy array or a torch tensor, got {type(x).__name__}"
        )
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    try:
        with (
            warnings.catch_warnings()
        ):  # read-only arrays (np.asarray of a PIL image): never written
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(x)
    except ValueError:  # negative strides
        return torch.from_numpy(x.copy())
    except TypeError:
        raise PixelwiseError(f"CRF {name} has an unsupported dtype {x.dtype}") from None


def _check_image(image: torch.Tensor, batched: bool, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N,) H×W×K image(s) → (N,) H×W×K; a grayscale H×W gets K = 1."""
    if image.dtype != torch.uint8:
        raise PixelwiseError(
            f"CRF image must be uint8 (values 0-255), got dtype {str(image.dtype).replace('torch.', '')}"
        )
    want = 4 if batched else 3
    if image.ndim == want - 1:
        image = image.unsqueeze(-1)
    if image.ndim != want or not 1 <= image.shape[-1] <= 4:
        layout = "N×H×W×3" if batched else "H×W×3"
        raise PixelwiseError(
            f"CRF image must be {layout} (channels last) to match the scores, got shape "
            f"{tuple(image.shape)}"
        )
    if tuple(image.shape[-3:-1]) != size:
        raise PixelwiseError(
            f"CRF image is {image.shape[-2]}x{image.shape[-3]} (W×H) but the scores are "
            f"{size[1]}x{size[0]}"
        )
    return image


def _check_scores(scores: torch.Tensor, is_probs: bool) -> None:
    kind = "probs" if is_probs else "logits"
    if not scores.is_floating_point():
        raise PixelwiseError(
            f"CRF {kind} must be a floating-point array, got dtype "
            f"{str(scores.dtype).replace('torch.', '')}"
        )
    if scores.ndim not in (3, 4):
        raise PixelwiseError(
            f"CRF {kind} must be C×H×W or N×C×H×W, got shape {tuple(scores.shape)}"
        )
    c = scores.shape[-3]
    if c < 2:
        raise PixelwiseError(
            f"CRF {kind} need at least 2 classes, got {c} (a one-channel sigmoid model's logit z "
            "is the pair (0, z): pixelwise.outputs.two_class_logits)"
        )
    if scores.shape[-1] < 1 or scores.shape[-2] < 1:
        raise PixelwiseError(f"CRF {kind} have an empty image, shape {tuple(scores.shape)}")
    if is_probs:
        lo, hi = float(scores.min()), float(scores.max())
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise PixelwiseError(f"CRF probs must lie in [0, 1], got values in [{lo}, {hi}]")
        sums = scores.to(torch.float64).sum(dim=-3)
        worst = float((sums - 1).abs().max())
        if worst > 1e-3:
            raise PixelwiseError(
                f"CRF probs must sum to 1 over classes; a pixel sums to "
                f"{float(sums.flatten()[(sums - 1).abs().argmax()]):.6g}"
            )
    elif not bool(torch.isfinite(scores).all()):
        raise PixelwiseError("CRF logits hold NaN or infinite values")


def _features(image: torch.Tensor, sxy: float, srgb: float | None) -> np.ndarray:
    """Per-pixel features, pixels row-major: (x/sxy, y/sxy[, channels/srgb]), float32 (N, d) —
    the reference's order and float32 division."""
    h, w = image.shape[:2]
    k = 0 if srgb is None else image.shape[2]
    feats = np.empty((h, w, 2 + k), np.float32)
    feats[..., 0] = np.arange(w, dtype=np.float32)[None, :] / np.float32(sxy)
    feats[..., 1] = np.arange(h, dtype=np.float32)[:, None] / np.float32(sxy)
    if srgb is not None:
        np.divide(image.cpu().numpy(), np.float32(srgb), out=feats[..., 2:], dtype=np.float32)
    return feats.reshape(h * w, 2 + k)


def _padded(num_classes: int) -> int:
    """Class columns the CPU kernels work on: a multiple of 8 (whole SIMD registers, measured
    faster than the exact count), or the next power of two below 8."""
    return 1 << (num_classes - 1).bit_length() if num_classes <= 8 else -(-num_classes // 8) * 8


# ---------------------------------------------------------------------------------------------
# Mean field on the CPU (numba lattice). Pixel-major (N, Cp) float32 arrays; padding columns hold
# log-probability -inf, so they stay 0 in Q and in every message.
# ---------------------------------------------------------------------------------------------

_BLOCK = 256  # pixels per block in the transposes: keeps both layouts' rows in cache


@numba.njit(cache=True, nogil=True)
def _to_pixel_major(src: np.ndarray, shift: np.ndarray, dst: np.ndarray) -> None:
    """``dst[i, k] = src[k, i] - shift[i]`` for k < C, ``-inf`` for the padding columns."""
    c, n = src.shape
    cp = dst.shape[1]
    for i0 in range(0, n, _BLOCK):
        i1 = min(i0 + _BLOCK, n)
        for k in range(c):
            for i in range(i0, i1):
                dst[i, k] = src[k, i] - shift[i]
        for i in range(i0, i1):
            for k in range(c, cp):
                dst[i, k] = -np.inf


@numba.njit(cache=True, nogil=True)
def _to_class_major(q: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> None:
    """``probs[k, i] = q[i, k]`` for k < C and ``labels[i] = argmax_k q[i, k]`` (first maximum)."""
    c, n = probs.shape
    for i0 in range(0, n, _BLOCK):
        i1 = min(i0 + _BLOCK, n)
        for i in range(i0, i1):
            best = 0
            for k in range(1, c):
                if q[i, k] > q[i, best]:
                    best = k
            labels[i] = best
        for k in range(c):
            for i in range(i0, i1):
                probs[k, i] = q[i, k]


@numba.njit(cache=True, nogil=True)
def _shifted_sum(log_p: np.ndarray, message: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = log_p[i] + message[i] - max(log_p[i] + message[i])`` (-inf stays -inf)."""
    n, c = log_p.shape
    for i in range(n):
        m = -np.inf
        for k in range(c):
            v = log_p[i, k] + message[i, k]
            out[i, k] = v
            m = max(m, v)
        for k in range(c):
            out[i, k] -= m


@numba.njit(cache=True, nogil=True, fastmath=True)
def _normalise_rows(q: np.ndarray) -> None:
    n, c = q.shape
    for i in range(n):
        s = np.float32(0.0)
        for k in range(c):
            s += q[i, k]
        inv = np.float32(1.0) / s
        for k in range(c):
            q[i, k] *= inv


def _softmax_into(log_p: np.ndarray, message: np.ndarray, q: np.ndarray) -> None:
    """``q[i] = softmax(log_p[i] + message[i])``; -inf log-probabilities stay impossible. The
    exponential is numpy's (vectorised); the row passes are numba's."""
    _shifted_sum(log_p, message, q)
    np.exp(q, out=q)
    _normalise_rows(q)


def _pixel_major_log_p(scores: np.ndarray, is_probs: bool) -> np.ndarray:
    """(C, N) float32 logits or probabilities → (N, Cp) float32 log-probabilities ``-U``."""
    c, n = scores.shape
    out = np.empty((n, _padded(c)), np.float32)
    if is_probs:
        with np.errstate(divide="ignore"):
            _to_pixel_major(np.log(scores), np.zeros(n, np.float32), out)  # log 0 = -inf
        return out
    m = scores.max(axis=0)
    e = np.subtract(scores, m)
    np.exp(e, out=e)
    lse = np.log(e.sum(axis=0))
    del e
    _to_pixel_major(scores, lse + m, out)
    return out


class _CPUKernel:
    """One kernel's lattice with the symmetric normalisation folded into its per-pixel weights:
    splat with ``b·n_i``, slice with ``b·n_i·alpha·w`` (``n_i = 1/sqrt(K1)_i``)."""

    def __init__(self, feats: np.ndarray, weight: float) -> None:
        lat = build_lattice(feats)
        ones = np.ones((feats.shape[0], 1), np.float32)
        norm = 1.0 / np.sqrt(lat.filter(ones)[:, 0] + np.float32(1e-20))
        lat.weights *= norm[:, None]
        self.lattice = lat
        self.slice_scale = np.float32(lat.alpha * weight)

    def add_message(self, q: np.ndarray, out: np.ndarray, buffers: list[np.ndarray]) -> None:
        rows = self.lattice.num_vertices + 1
        filter_into(
            self.lattice,
            q,
            out,
            buffers[0][:rows],
            buffers[1][:rows],
            self.slice_scale,
            accumulate=True,
        )


def _mean_field_cpu(
    image: torch.Tensor,
    scores: np.ndarray,
    is_probs: bool,
    params: CRFParams,
    compat: np.ndarray | None,
    probs: np.ndarray,
    labels: np.ndarray,
) -> None:
    """(C, N) float32 scores of one image → ``probs`` (C, N) float32 and ``labels`` (N,) int64."""
    c, n = scores.shape
    log_p = _pixel_major_log_p(scores, is_probs)
    q = np.empty_like(log_p)
    message = np.zeros_like(log_p)
    _softmax_into(log_p, message, q)
    kernels = []
    if params.iterations > 0 and params.gaussian_weight > 0:
        feats = _features(image, params.gaussian_sxy, None)
        kernels.append(_CPUKernel(feats, params.gaussian_weight))
    if params.iterations > 0 and params.bilateral_weight > 0:
        feats = _features(image, params.bilateral_sxy, params.bilateral_srgb)
        kernels.append(_CPUKernel(feats, params.bilateral_weight))
    if kernels:
        feats = None
        rows = max(k.lattice.num_vertices for k in kernels) + 1
        buffers = [np.empty((rows, q.shape[1]), np.float32) for _ in range(2)]
        mu = mixed = None
        if compat is not None:  # the message is -(Σ_m w_m K̃_m Q) μ_symᵀ, on the real classes
            mu = np.zeros((q.shape[1], q.shape[1]), np.float32)
            mu[:c, :c] = -0.5 * (compat + compat.T).T
            mixed = np.empty_like(message)
        for _ in range(params.iterations):
            message.fill(0.0)
            for k in kernels:
                k.add_message(q, message, buffers)
            if mu is not None:
                np.matmul(message, mu, out=mixed)
            _softmax_into(log_p, message if mu is None else mixed, q)
    del message, log_p
    _to_class_major(q, probs, labels)


class DenseCRF:
    """Fully connected CRF post-processing: refine a network's class scores with the image.

    Args:
        params: kernel widths and weights, compatibility and iterations; ``None``: DeepLab v1's.
        backend: ``"auto"`` (numba on CPU inputs, PyTorch on CUDA tensors), ``"numba"`` or
            ``"torch"`` (PyTorch on the scores' device, CPU included).

    Call it with the image and either ``logits`` or ``probs``::

        crf = DenseCRF()
        out = crf(image, logits=logits)      # image H×W×3 uint8, logits C×H×W
        out.probs, out.labels                # C×H×W float32, H×W int64

    Inputs may be numpy arrays or torch tensors, of any float dtype and memory layout; a batch
    (N×H×W×3 images, N×C×H×W scores) is refined one image at a time, so memory stays that of one
    image (:func:`crf_memory_bytes`). Probabilities of exactly 0 stay 0.
    """

    def __init__(self, params: CRFParams | None = None, *, backend: str = "auto") -> None:
        if backend not in ("auto", "numba", "torch"):
            raise PixelwiseError(f"CRF backend must be 'auto', 'numba' or 'torch', got {backend!r}")
        self.params = params if params is not None else CRFParams()
        if not isinstance(self.params, CRFParams):
            raise PixelwiseError(
                f"CRF params must be a CRFParams, got {type(self.params).__name__}"
            )
        self.backend = backend

    def __repr__(self) -> str:
        return f"DenseCRF({self.params!r}, backend={self.backend!r})"

    def __call__(
        self, image: Array, *, logits: Array | None = None, probs: Array | None = None
    ) -> CRFResult:
        """Refine ``logits`` or ``probs`` (exactly one) of ``image``.

        Args:
            image: uint8 H×W×3 (or H×W×K; H×W for grayscale), or a batch N×H×W×3.
            logits: C×H×W (or N×C×H×W) scores before the softmax, any float dtype.
            probs: C×H×W (or N×C×H×W) probabilities summing to 1 over classes, any float dtype.

        Returns:
            A :class:`CRFResult` of the scores' kind: numpy arrays, or torch tensors on the
            scores' device.
        """
        if (logits is None) == (probs is None):
            raise PixelwiseError("DenseCRF needs exactly one of logits= or probs=")
        is_probs = probs is not None
        raw = probs if is_probs else logits
        scores = _as_tensor(raw, "probs" if is_probs else "logits")
        _check_scores(scores, is_probs)
        batched = scores.ndim == 4
        img = _check_image(_as_tensor(image, "image"), batched, tuple(scores.shape[-2:]))
        if batched and img.shape[0] != scores.shape[0]:
            raise PixelwiseError(
                f"CRF got {img.shape[0]} image(s) for {scores.shape[0]} score map(s)"
            )
        compat = self._compat(scores.shape[-3])
        if not batched:
            img, scores = img[None], scores[None]
        nb, c, h, w = scores.shape
        use_torch = self.backend == "torch" or (
            self.backend == "auto" and scores.device.type != "cpu"
        )
        if use_torch:
            from .lattice_torch import mean_field_torch

            p_out = torch.empty((nb, c, h, w), dtype=torch.float32, device=scores.device)
            l_out = torch.empty((nb, h, w), dtype=torch.int64, device=scores.device)
            for i in range(nb):
                p_out[i], l_out[i] = mean_field_torch(
                    img[i].to(scores.device), scores[i], is_probs, self.params, compat
                )
        else:
            p_np = np.empty((nb, c, h, w), np.float32)
            l_np = np.empty((nb, h, w), np.int64)
            for i in range(nb):
                s = scores[i].cpu().to(torch.float32).reshape(c, h * w).contiguous().numpy()
                _mean_field_cpu(
                    img[i].cpu(),
                    s,
                    is_probs,
                    self.params,
                    compat,
                    p_np[i].reshape(c, h * w),
                    l_np[i].reshape(h * w),
                )
            if isinstance(raw, torch.Tensor):
                p_out = torch.from_numpy(p_np).to(scores.device)
                l_out = torch.from_numpy(l_np).to(scores.device)
            else:
                p_out, l_out = p_np, l_np
        if not batched:
            p_out, l_out = p_out[0], l_out[0]
        return CRFResult(p_out, l_out)

    def _compat(self, num_classes: int) -> np.ndarray | None:
        if self.params.compatibility is None:
            return None
        mat = np.asarray(self.params.compatibility, dtype=np.float64)
        if mat.shape[0] != num_classes:
            raise PixelwiseError(
                f"CRF compatibility is {mat.shape[0]}×{mat.shape[1]} but the scores have "
                f"{num_classes} classes"
            )
        return mat


def crf_memory_bytes(
    height: int,
    width: int,
    num_classes: int,
    *,
    channels: int = 3,
    gaussian_vertices: float = 0.13,
    bilateral_vertices: float = 0.08,
) -> int:
    """Peak working memory of :class:`DenseCRF` on the CPU for one image, in bytes, counted from its
    data structures (docs/crf.md works through 2048×2048 with 19 classes). The caller's own inputs
    are not counted.

    With N pixels, C classes padded to Cp (a multiple of 8), d_g = 2 and d_b = 2 + channels:

    * N·Cp float32 ×3: log-probabilities, Q, the message; N·C float32: the returned probabilities;
      N int64: the labels;
    * per lattice, N·(d + 1) int32 vertex indices and float32 weights, M·2(d + 1) int32 blur
      neighbours; (M + 1)·Cp float32 ×2 of blur scratch for the larger lattice;
    * while a lattice is built: N·(2 + channels) float32 features and an N float32 normaliser.

    ``gaussian_vertices`` and ``bilateral_vertices`` are lattice vertices per pixel, M / N. The
    Gaussian lattice's depends only on its width (0.13 at sxy = 3); the bilateral one's on the image
    (0.08 on a 480×360 CamVid frame, 0.02 at 2048×2048, with DeepLab's widths).
    """
    n = height * width
    cp = _padded(num_classes)
    d_g, d_b = 2, 2 + channels
    m_g, m_b = gaussian_vertices * n, bilateral_vertices * n
    dense = n * (3 * 4 * cp + 4 * num_classes + 8)
    lattices = n * 8 * ((d_g + 1) + (d_b + 1)) + 8 * (m_g * (d_g + 1) + m_b * (d_b + 1))
    scratch = 2 * 4 * cp * (max(m_g, m_b) + 1)
    build = n * 4 * (2 + channels + 1)
    return int(dense + lattices + scratch + build)


def dense_crf(
    image: Array,
    *,
    logits: Array | None = None,
    probs: Array | None = None,
    params: CRFParams | None = None,
) -> CRFResult:
    """Functional form: ``DenseCRF(params)(image, logits=..., probs=...)``."""
    return DenseCRF(params)(image, logits=logits, probs=probs)
