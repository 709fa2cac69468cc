"""The permutohedral lattice and mean field in PyTorch, for CUDA tensors (any device works).

The same lattice as :mod:`pixelwise.crf.lattice` (same embedding, blur, slice and normalisation), built
with tensor operations instead of a hash table: each simplex vertex's integer key is packed into one
int64 (a mixed-radix code over the keys' range, widened by d so that blur neighbours are codes too),
``torch.unique`` numbers the vertices, and a neighbour along lattice direction j is the vertex whose
code differs by a constant, found by ``searchsorted``. Keys too wide to pack in 62 bits (tiny kernel
widths on huge images) fall back to the CPU builder. Splatting is ``index_add_`` (atomic adds on CUDA,
so the last bits may differ from run to run).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from .lattice import LatticeShape, build_lattice

if TYPE_CHECKING:
    from .dense import CRFParams

__all__ = ["TorchLattice", "build_lattice_torch", "mean_field_torch"]

_CHUNK = 1 << 18  # points per chunk of the embedding (bounds its (chunk, d+1, d+1) temporaries)


class TorchLattice(LatticeShape):
    """A lattice on a device. ``offsets`` (N, d+1) int64 1-based vertex indices, ``weights``
    (N, d+1) float32, ``neighbours`` (d+1, M, 2) int64 (1-based, 0 = none)."""

    def __init__(
        self, offsets: torch.Tensor, weights: torch.Tensor, neighbours: torch.Tensor
    ) -> None:
        self.offsets = offsets
        self.weights = weights
        self.neighbours = neighbours

    def filter(self, values: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """``scale · slice(blur(splat(values)))`` for (N, C) values (``scale`` defaults to alpha)."""
        n, c = values.shape
        d1 = self.dim + 1
        lattice = values.new_zeros((self.num_vertices + 1, c))
        for r in range(d1):
            lattice.index_add_(0, self.offsets[:, r], values * self.weights[:, r, None])
        for j in range(d1):
            nb = self.neighbours[j]
            blurred = lattice.clone()
            blurred[1:] += 0.5 * (lattice[nb[:, 0]] + lattice[nb[:, 1]])
            lattice = blurred
        out = values.new_zeros((n, c))
        for r in range(d1):
            out.addcmul_(lattice[self.offsets[:, r]], self.weights[:, r, None])
        return out * (self.alpha if scale is None else scale)


def _embed(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Remainder-0 point (N, d+1) int64, rank (N, d+1) int64 and barycentric weights (N, d+1)
    float32 of each (N, d) float32 feature, following the reference's float32 arithmetic."""
    n, d = feats.shape
    d1 = d + 1
    dev = feats.device
    inv_std = np.float32(math.sqrt(2.0 / 3.0) * d1)
    scale = torch.tensor(
        [np.float32(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std) for i in range(d)],
        dtype=torch.float32,
        device=dev,
    )
    cf = feats * scale
    # elevated[0] = Σ cf, elevated[j] = Σ_{k >= j} cf_k - j·cf_{j-1}; sums accumulated from the end
    suffix = torch.cumsum(cf.flip(1), dim=1).flip(1)  # suffix[:, j] = Σ_{k >= j} cf_k
    tail = torch.cat([suffix[:, 1:], cf.new_zeros((n, 1))], dim=1)  # Σ_{k >= j+1} for j = 0..d-1
    js = torch.arange(1, d1, device=dev, dtype=torch.float32)
    elevated = torch.cat([suffix[:, :1], tail - js * cf], dim=1)
    down = np.float32(1.0) / np.float32(d1)
    v = torch.round(elevated * down)  # half to even, as the reference's SSE rounding
    rem0 = v * float(d1)
    total = v.sum(dim=1, keepdim=True).to(torch.int64)
    diff = elevated - rem0
    # rank: for i < j, i counts diff_i < diff_j, j counts diff_i >= diff_j (the reference's order)
    lt = diff[:, :, None] < diff[:, None, :]  # lt[:, i, j] = diff_i < diff_j
    upper = torch.ones(d1, d1, dtype=torch.bool, device=dev).triu(1)
    rank = (lt & upper).sum(dim=2) + (~lt & upper).sum(dim=1)
    rank = rank + total
    low, high = rank < 0, rank >= d1
    rank = rank + d1 * low - d1 * high
    rem0 = rem0 + float(d1) * low - float(d1) * high
    vb = (elevated - rem0) * down
    p = d - rank
    bary = feats.new_zeros((n, d1 + 1))
    bary.scatter_add_(1, p, vb).scatter_add_(1, p + 1, -vb)
    bary[:, 0] += 1.0 + bary[:, d1]
    return rem0.to(torch.int64), rank, bary[:, :d1].contiguous()


def build_lattice_torch(features: torch.Tensor) -> TorchLattice:
    """The lattice of (N, d) features (already divided by the kernel widths) on their device."""
    feats = features.to(torch.float32).contiguous()
    n, d = feats.shape
    d1 = d + 1
    dev = feats.device
    rems, ranks, barys = [], [], []
    for i in range(0, n, _CHUNK):
        r0, rk, b = _embed(feats[i : i + _CHUNK])
        rems.append(r0[:, :d])
        ranks.append(rk[:, :d])
        barys.append(b)
    rem0, rank, bary = torch.cat(rems), torch.cat(ranks), torch.cat(barys)
    del rems, ranks, barys
    # vertex r of the simplex: key_i = rem0_i + r - (d+1)·[rank_i > d - r], i < d
    lo = rem0.amin(dim=0) - d1 - d
    span = rem0.amax(dim=0) + d1 + d - lo + 1
    bits = sum(math.log2(int(s)) for s in span.tolist())
    if bits > 62:  # keys too wide to pack: build on the CPU, filter on the device
        lat = build_lattice(feats.cpu().numpy())
        return TorchLattice(
            torch.from_numpy(lat.offsets).to(dev, torch.int64),
            torch.from_numpy(lat.weights).to(dev),
            torch.from_numpy(lat.neighbours).to(dev, torch.int64),
        )
    stride = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), dim=0)
    base = ((rem0 - lo) * stride).sum(dim=1)  # code of rem0 itself
    del rem0
    codes = torch.empty((n, d1), dtype=torch.int64, device=dev)
    for r in range(d1):
        shift = r - d1 * (rank > d - r).to(torch.int64)
        codes[:, r] = base + (shift * stride).sum(dim=1)
    del rank, base
    uniq, inverse = torch.unique(codes, sorted=True, return_inverse=True)
    del codes
    m = uniq.numel()
    # neighbours along direction j: key - 1 everywhere but key_j + d (n1), and the opposite (n2)
    total_stride = stride.sum()
    neighbours = torch.empty((d1, m, 2), dtype=torch.int64, device=dev)
    for j in range(d1):
        step = -total_stride + (d1 * stride[j] if j < d else 0)
        for side, target in enumerate((uniq + step, uniq - step)):
            idx = torch.searchsorted(uniq, target).clamp_(max=m - 1)
            neighbours[j, :, side] = torch.where(uniq[idx] == target, idx + 1, 0)
    return TorchLattice(inverse + 1, bary, neighbours)


def _features(image: torch.Tensor, sxy: float, srgb: float | None) -> torch.Tensor:
    """The reference's features (x/sxy, y/sxy[, channels/srgb]) as float32 (N, d) on the image's
    device."""
    h, w = image.shape[:2]
    dev = image.device
    ys, xs = torch.meshgrid(
        torch.arange(h, device=dev, dtype=torch.float32),
        torch.arange(w, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    parts = [(xs / np.float32(sxy))[..., None], (ys / np.float32(sxy))[..., None]]
    if srgb is not None:
        parts.append(image.to(torch.float32) / np.float32(srgb))
    return torch.cat(parts, dim=-1).reshape(h * w, -1)


def mean_field_torch(
    image: torch.Tensor,
    scores: torch.Tensor,
    is_probs: bool,
    params: CRFParams,
    compat: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean field for one image on the scores' device.

    Shape:
        image: (H, W, K) uint8; scores: (C, H, W) → probabilities (C, H, W) float32, labels (H, W).
    """
    c, h, w = scores.shape
    x = scores.to(torch.float32).permute(1, 2, 0).reshape(h * w, c)
    log_p = torch.log(x) if is_probs else torch.log_softmax(x, dim=1)
    del x
    q = torch.softmax(log_p, dim=1)
    kernels: list[tuple[TorchLattice, torch.Tensor, float]] = []
    if params.iterations > 0:
        for sxy, srgb, weight in (
            (params.gaussian_sxy, None, params.gaussian_weight),
            (params.bilateral_sxy, params.bilateral_srgb, params.bilateral_weight),
        ):
            if weight > 0:
                lat = build_lattice_torch(_features(image, sxy, srgb))
                norm = lat.filter(q.new_ones((h * w, 1)))[:, 0].add_(1e-20).rsqrt_()
                lat.weights *= norm[:, None]
                kernels.append((lat, norm, lat.alpha * weight))
    mu = None
    if compat is not None:
        mu = torch.as_tensor(-0.5 * (compat + compat.T).T, dtype=torch.float32, device=q.device)
    for _ in range(params.iterations if kernels else 0):
        message = sum(lat.filter(q, scale) for lat, _, scale in kernels)
        if mu is not None:
            message = message @ mu
        q = torch.softmax(log_p + message, dim=1)
    probs = q.reshape(h, w, c).permute(2, 0, 1).contiguous()
    return probs, probs.argmax(dim=0)
