"""Gaussian filtering in a permutohedral lattice, on the CPU with numba.

Adams, Baek and Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice", Eurographics
2010, as Krähenbühl and Koltun's dense CRF code (``permutohedral.cpp``, also in pydensecrf) implements it:

1. **Embed.** Each d-dimensional feature (already divided by the kernel widths) is scaled and lifted onto
   the hyperplane ``sum(x) = 0`` of R^(d+1), where the lattice points are the integer vectors whose
   coordinates are all congruent modulo d + 1. The enclosing simplex is found by rounding to the nearest
   "remainder-0" point and sorting the differences (the *rank*); its d + 1 vertices and the point's
   barycentric weights in it follow.
2. **Splat.** Each pixel adds its values, times its barycentric weights, to its d + 1 vertices.
3. **Blur.** Along each of the d + 1 lattice directions in turn, every vertex becomes
   ``v + (v_prev + v_next) / 2`` (the kernel [1/2, 1, 1/2]; missing neighbours count as zero).
4. **Slice.** Each pixel reads back the barycentric-weighted sum of its vertices, times
   ``alpha = 1 / (1 + 2^-d)``.

The result approximates ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (the sum includes ``j = i``), which is
what the CRF's normalisation and messages are built on. The lattice is built once per image; filtering
is linear in the number of pixels. Embedding follows the reference's float32 arithmetic and
round-to-nearest so that lattices, and hence CRF outputs, match it closely.

Vertex index 0 is a dummy that stays zero: missing blur neighbours point at it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from ..errors import PixelwiseError

__all__ = ["Lattice", "build_lattice", "filter_into"]

_MIX = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True)
def _hash(key: np.ndarray, mask: np.uint64) -> np.int64:
    h = np.uint64(0)
    for v in key:
        h = (h + np.uint64(np.int64(v) & 0xFFFFFFFF)) * np.uint64(1664525)
    h ^= h >> np.uint64(31)
    h *= _MIX
    h ^= h >> np.uint64(29)
    return np.int64(h & mask)


@numba.njit(cache=True, nogil=True)
def _find(table, keys, key, mask, filled, create):
    """Index of ``key`` in ``keys`` via open addressing in ``table`` (-1: absent); inserts it at
    ``filled`` when ``create``. Returns (index, inserted)."""
    d = key.shape[0]
    h = _hash(key, mask)
    while True:
        e = table[h]
        if e == -1:
            if create:
                for i in range(d):
                    keys[filled, i] = key[i]
                table[h] = filled
                return filled, True
            return -1, False
        same = True
        for i in range(d):
            if keys[e, i] != key[i]:
                same = False
                break
        if same:
            return e, False
        h = (h + 1) & mask


@numba.njit(cache=True, nogil=True)
def _rint(x: np.float32) -> np.float32:
    """Round half to even, as the reference's SSE rounding does."""
    r = np.float32(math.floor(x))
    diff = x - r
    if diff > 0.5 or (diff == 0.5 and r % 2 != 0):
        r += np.float32(1.0)
    return r


@numba.njit(cache=True, nogil=True)
def _feature_scale(d: int) -> np.ndarray:
    """Per-coordinate embedding scale (the reference's float32 ``scale_factor``), for d features."""
    inv_std = np.float32(math.sqrt(2.0 / 3.0) * (d + 1))
    scale = np.empty(d, np.float32)
    for i in range(d):
        scale[i] = np.float32(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std)
    return scale


@numba.njit(cache=True, nogil=True)
def _initial_capacity(n: int) -> int:
    """Hash-table size for n points; it grows as needed (lattices hold far fewer vertices than points)."""
    capacity = 1024
    while capacity < n // 2:
        capacity *= 2
    return capacity


@numba.njit(cache=True, nogil=True)
def _rehash_general(keys: np.ndarray, filled: int, capacity: int):
    """A table of ``capacity`` slots holding the first ``filled`` rows of ``keys``: (table, keys,
    mask), ``keys`` copied into room for ``capacity // 2`` keys."""
    mask = np.uint64(capacity - 1)
    table = np.full(capacity, -1, np.int32)
    bigger = np.empty((capacity // 2 + 1, keys.shape[1]), np.int32)
    bigger[:filled] = keys[:filled]
    for e in range(filled):
        h = _hash(bigger[e], mask)
        while table[h] != -1:
            h = (h + 1) & mask
        table[h] = e
    return table, bigger, mask


@numba.njit(cache=True, nogil=True)
def _general_neighbours(table, keys, mask, m) -> np.ndarray:
    """Blur neighbours ((d+1) × m × 2, 1-based, 0 = none) of the first ``m`` vertex keys."""
    d = keys.shape[1]
    neighbours = np.empty((d + 1, m, 2), np.int32)
    n1 = np.empty(d, np.int32)
    n2 = np.empty(d, np.int32)
    for j in range(d + 1):
        for i in range(m):
            for c in range(d):
                n1[c] = keys[i, c] - 1
                n2[c] = keys[i, c] + 1
            if j < d:
                n1[j] = keys[i, j] + d
                n2[j] = keys[i, j] - d
            neighbours[j, i, 0] = _find(table, keys, n1, mask, m, False)[0] + 1
            neighbours[j, i, 1] = _find(table, keys, n2, mask, m, False)[0] + 1
    return neighbours


@numba.njit(cache=True, nogil=True)
def _build_general(features: np.ndarray):
    """Lattice of ``features`` (N, d) float32: per-point vertex indices (1-based, N × (d+1)) and
    barycentric weights, and the blur neighbours ((d+1) × M × 2, 1-based, 0 = none).

    Keys are arrays in an open-addressing hash table: any key range (the fallback of
    :func:`_build_packed`)."""
    n, d = features.shape
    d1 = d + 1
    scale = _feature_scale(d)
    canonical = np.empty((d1, d1), np.int32)
    for i in range(d1):
        for j in range(d1):
            canonical[i, j] = i if j <= d - i else i - d1
    down = np.float32(1.0) / np.float32(d1)
    up = np.float32(d1)

    offsets = np.empty((n, d1), np.int32)
    bary_out = np.empty((n, d1), np.float32)
    capacity = _initial_capacity(n)
    table, keys, mask = _rehash_general(np.empty((0, d), np.int32), 0, capacity)
    filled = 0

    elevated = np.empty(d1, np.float32)
    rem0 = np.empty(d1, np.float32)
    rank = np.empty(d1, np.int32)
    bary = np.empty(d1 + 1, np.float32)
    key = np.empty(d, np.int32)
    last = np.full((d1, d), np.iinfo(np.int32).min, np.int32)  # previous point's vertex keys
    last_e = np.zeros(d1, np.int32)
    for k in range(n):
        sm = np.float32(0.0)
        for j in range(d, 0, -1):
            cf = features[k, j - 1] * scale[j - 1]
            elevated[j] = sm - np.float32(j) * cf
            sm += cf
        elevated[0] = sm
        total = 0
        for i in range(d1):
            v = _rint(down * elevated[i])
            rem0[i] = v * up
            total += np.int32(v)
            rank[i] = 0
        for i in range(d):
            di = elevated[i] - rem0[i]
            for j in range(i + 1, d1):
                if di < elevated[j] - rem0[j]:
                    rank[i] += 1
                else:
                    rank[j] += 1
        for i in range(d1):
            rank[i] += total
            if rank[i] < 0:
                rank[i] += d1
                rem0[i] += up
            elif rank[i] >= d1:
                rank[i] -= d1
                rem0[i] -= up
        for i in range(d1 + 1):
            bary[i] = 0.0
        for i in range(d1):
            v = (elevated[i] - rem0[i]) * down
            p = d - rank[i]
            bary[p] += v
            bary[p + 1] -= v
        bary[0] += np.float32(1.0) + bary[d1]
        for r in range(d1):
            same = True
            for i in range(d):
                key[i] = np.int32(rem0[i]) + canonical[r, rank[i]]
                if key[i] != last[r, i]:
                    same = False
            if same:  # neighbouring pixels mostly share their simplex
                offsets[k, r] = last_e[r]
                bary_out[k, r] = bary[r]
                continue
            if 2 * (filled + 1) > capacity:  # grow: double the table, reinsert every key
                capacity *= 2
                table, keys, mask = _rehash_general(keys, filled, capacity)
            e, inserted = _find(table, keys, key, mask, filled, True)
            if inserted:
                filled += 1
            offsets[k, r] = e + 1
            bary_out[k, r] = bary[r]
            last_e[r] = e + 1
            for i in range(d):
                last[r, i] = key[i]
    return offsets, bary_out, _general_neighbours(table, keys, mask, filled)


_B = 64  # points per block of the vectorised embedding


@numba.njit(cache=True, nogil=True)
def _mix(code: np.int64, mask: np.int64) -> np.int64:
    h = np.uint64(code) * _MIX
    h ^= h >> np.uint64(32)
    return np.int64(h) & mask


@numba.njit(cache=True, nogil=True)
def _probe(tkeys: np.ndarray, mask: np.int64, code: np.int64) -> np.int64:
    """Slot of ``code`` in the open-addressing table ``tkeys``, or the empty slot (-1) it would take."""
    h = _mix(code, mask)
    while tkeys[h] != -1 and tkeys[h] != code:
        h = (h + 1) & mask
    return h


@numba.njit(cache=True, nogil=True)
def _rehash_packed(vcodes: np.ndarray, filled: int, capacity: int):
    """A table of ``capacity`` slots holding the ``filled`` codes of ``vcodes``: (tkeys, tvals,
    vcodes, mask), ``vcodes`` copied into room for ``capacity // 2`` codes."""
    mask = np.int64(capacity - 1)
    tkeys = np.full(capacity, -1, np.int64)
    tvals = np.empty(capacity, np.int32)
    bigger = np.empty(capacity // 2 + 1, np.int64)
    bigger[:filled] = vcodes[:filled]
    for e in range(filled):
        g = _probe(tkeys, mask, bigger[e])
        tkeys[g] = bigger[e]
        tvals[g] = e
    return tkeys, tvals, bigger, mask


@numba.njit(cache=True, nogil=True)
def _block_scratch(d1: int):
    """Scratch for :func:`_embed_block`: elevated point, remainder-0 point and rank ((d+1) × _B), the
    running sum, the rank offset and vertex 0's code (_B each)."""
    return (
        np.empty((d1, _B), np.float32),
        np.empty((d1, _B), np.float32),
        np.empty((d1, _B), np.int32),
        np.empty(_B, np.float32),
        np.empty(_B, np.int32),
        np.empty(_B, np.int64),
    )


@numba.njit(cache=True, nogil=True)
def _embed_block(features, k0, nb, scale, lo, stride, stride_sum, bary, codes, scratch) -> None:
    """Embed points ``k0 .. k0 + nb - 1`` (nb <= _B), vectorised across them with the reference's
    float32 steps: barycentric weights into ``bary`` ((d+2) × _B) and packed vertex codes into
    ``codes`` ((d+1) × _B). ``scratch``: :func:`_block_scratch`."""
    el, rem0, rank, sm, total, code0 = scratch
    d = features.shape[1]
    d1 = d + 1
    down = np.float32(1.0) / np.float32(d1)
    up = np.float32(d1)
    sm[:] = 0.0
    for j in range(d, 0, -1):
        fj = np.float32(j)
        for b in range(nb):
            cf = features[k0 + b, j - 1] * scale[j - 1]
            el[j, b] = sm[b] - fj * cf
            sm[b] += cf
    for b in range(nb):
        el[0, b] = sm[b]
        total[b] = 0
    for i in range(d1):
        for b in range(nb):
            v = np.rint(down * el[i, b])  # half to even, as the reference's SSE rounding
            rem0[i, b] = v * up
            total[b] += np.int32(v)
            rank[i, b] = 0
    for i in range(d):
        for j in range(i + 1, d1):
            for b in range(nb):
                c = np.int32((el[i, b] - rem0[i, b]) < (el[j, b] - rem0[j, b]))
                rank[i, b] += c
                rank[j, b] += 1 - c
    for i in range(d1):
        for b in range(nb):
            r = rank[i, b] + total[b]
            low = np.int32(r < 0)
            high = np.int32(r >= d1)
            rank[i, b] = r + d1 * (low - high)
            rem0[i, b] += up * np.float32(low - high)
    for r in range(d1 + 1):
        for b in range(nb):
            bary[r, b] = 0.0
    for i in range(d1):
        for b in range(nb):
            v = (el[i, b] - rem0[i, b]) * down
            p = d - rank[i, b]
            for r in range(d1 + 1):
                bary[r, b] += v * (np.float32(p == r) - np.float32(p + 1 == r))
    for b in range(nb):
        bary[0, b] += np.float32(1.0) + bary[d1, b]
        code0[b] = 0
    for i in range(d):
        for b in range(nb):
            code0[b] += (np.int64(rem0[i, b]) - lo[i]) * stride[i]
    # vertex r: key_i = rem0_i + r - (d+1)·[rank_i > d - r]
    for r in range(d1):
        for b in range(nb):
            codes[r, b] = code0[b] + r * stride_sum
        for i in range(d):
            for b in range(nb):
                codes[r, b] -= d1 * stride[i] * np.int64(rank[i, b] > d - r)


@numba.njit(cache=True, nogil=True)
def _packed_neighbours(vcodes, m, tkeys, tvals, mask, stride, stride_sum) -> np.ndarray:
    """Blur neighbours ((d+1) × m × 2, 1-based, 0 = none) of the first ``m`` vertex codes."""
    d = stride.shape[0]
    d1 = d + 1
    neighbours = np.empty((d1, m, 2), np.int32)
    for j in range(d1):
        # n1: key - 1 everywhere but key_j + d; n2: the opposite
        step = -stride_sum + (d1 * stride[j] if j < d else 0)
        for i in range(m):
            for side in range(2):
                target = vcodes[i] + (step if side == 0 else -step)
                h = _probe(tkeys, mask, target)
                neighbours[j, i, side] = tvals[h] + 1 if tkeys[h] == target else 0
    return neighbours


@numba.njit(cache=True, nogil=True)
def _build_packed(features: np.ndarray, lo: np.ndarray, stride: np.ndarray):
    """:func:`_build_general` for keys that pack into one int64: ``Σ_i (key_i - lo_i) stride_i``.

    The embedding runs on blocks of points laid out so that the compiler vectorises it across
    points (:func:`_embed_block`); vertex lookups compare one integer, and a neighbour's code is the
    vertex's code plus a constant per lattice direction."""
    n, d = features.shape
    d1 = d + 1
    scale = _feature_scale(d)
    stride_sum = np.int64(0)
    for i in range(d):
        stride_sum += stride[i]

    offsets = np.empty((n, d1), np.int32)
    bary_out = np.empty((n, d1), np.float32)
    capacity = _initial_capacity(n)
    tkeys, tvals, vcodes, mask = _rehash_packed(np.empty(0, np.int64), 0, capacity)
    filled = 0

    scratch = _block_scratch(d1)
    bary = np.empty((d1 + 1, _B), np.float32)
    codes = np.empty((d1, _B), np.int64)
    last = np.full(d1, -1, np.int64)
    last_e = np.zeros(d1, np.int32)
    for k0 in range(0, n, _B):
        nb = min(_B, n - k0)
        _embed_block(features, k0, nb, scale, lo, stride, stride_sum, bary, codes, scratch)
        for b in range(nb):
            k = k0 + b
            for r in range(d1):
                bary_out[k, r] = bary[r, b]
                code = codes[r, b]
                hit = 0
                for r2 in range(d1):  # neighbouring pixels mostly share vertices
                    if code == last[r2]:
                        hit = last_e[r2]
                if hit:
                    offsets[k, r] = hit
                    continue
                h = _probe(tkeys, mask, code)
                if tkeys[h] == -1:
                    tkeys[h] = code
                    tvals[h] = filled
                    vcodes[filled] = code
                    filled += 1
                    if 2 * filled >= capacity:  # grow: double the table, reinsert every code
                        capacity *= 2
                        tkeys, tvals, vcodes, mask = _rehash_packed(vcodes, filled, capacity)
                    offsets[k, r] = filled
                else:
                    offsets[k, r] = tvals[h] + 1
            for r in range(d1):
                last[r] = codes[r, b]
                last_e[r] = offsets[k, r]
    neighbours = _packed_neighbours(vcodes, filled, tkeys, tvals, mask, stride, stride_sum)
    return offsets, bary_out, neighbours


@numba.njit(cache=True, nogil=True)
def _bounds(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-column minimum and maximum of (N, d) features, and whether all are finite."""
    n, d = features.shape
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    finite = True
    for k in range(n):
        for i in range(d):
            v = np.float64(features[k, i])
            if not np.isfinite(v):
                finite = False
            lo[i] = min(lo[i], v)
            hi[i] = max(hi[i], v)
    return lo, hi, finite


def _packing(fmin: np.ndarray, fmax: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo, stride) packing every vertex key and blur neighbour of features within
    [fmin, fmax] into a non-negative int64, from bounds on the embedded coordinates; ``None`` when
    62 bits are not enough."""
    d = fmin.shape[0]
    d1 = d + 1
    inv_std = math.sqrt(2.0 / 3.0) * d1
    scale = np.array([inv_std / math.sqrt((i + 2) * (i + 1)) for i in range(d)])
    lo_f, hi_f = fmin * scale, fmax * scale
    lo, span = np.empty(d, np.int64), np.empty(d, np.int64)
    margin = 4 * d1 + 2  # rounding, wrap-around, simplex corners, blur neighbours, float32
    for i in range(d):
        a, b = lo_f[i:].sum(), hi_f[i:].sum()
        if i > 0:
            a, b = a - i * hi_f[i - 1], b - i * lo_f[i - 1]
        lo[i] = math.floor(a) - margin
        span[i] = math.ceil(b) + margin - lo[i] + 1
    if sum(math.log2(s) for s in span.tolist()) > 62:
        return None
    stride = np.cumprod(np.concatenate([[1], span[:-1]])).astype(np.int64)
    return lo, stride


@numba.njit(cache=True, nogil=True, fastmath=True)
def _filter(values_in, offsets, weights, neighbours, buf_a, buf_b, out, scale, accumulate):
    """``out (+)= scale · slice(blur(splat(values_in)))`` with the same per-point weights for splat
    and slice (they carry any normalisation).

    ``buf_a``, ``buf_b``: (M + 1, C) scratch. Shapes: values_in, out (N, C)."""
    n, d1 = offsets.shape
    c = values_in.shape[1]
    m = neighbours.shape[1]
    buf_a[:] = 0.0
    buf_b[0, :] = 0.0
    for i in range(n):
        for j in range(d1):
            o = offsets[i, j]
            w = weights[i, j]
            for k in range(c):
                buf_a[o, k] += w * values_in[i, k]
    src, dst = buf_a, buf_b
    for j in range(d1):
        for i in range(m):
            a = neighbours[j, i, 0]
            b = neighbours[j, i, 1]
            for k in range(c):
                dst[i + 1, k] = src[i + 1, k] + np.float32(0.5) * (src[a, k] + src[b, k])
        src, dst = dst, src
    for i in range(n):
        if not accumulate:
            out[i, :] = 0.0
        for j in range(d1):
            o = offsets[i, j]
            w = weights[i, j] * scale
            for k in range(c):
                out[i, k] += w * src[o, k]


class LatticeShape:
    """What a lattice's arrays say about it; shared by the numpy and the PyTorch lattice, which hold
    ``offsets`` (N, d+1) and ``neighbours`` (d+1, M, 2)."""

    offsets: np.ndarray
    neighbours: np.ndarray

    @property
    def dim(self) -> int:
        return self.offsets.shape[1] - 1

    @property
    def num_vertices(self) -> int:
        return self.neighbours.shape[1]

    @property
    def alpha(self) -> float:
        return 1.0 / (1.0 + 2.0 ** (-self.dim))


@dataclass
class Lattice(LatticeShape):
    """A permutohedral lattice over one image's features, ready to filter (N × C) float32 values.

    Attributes:
        offsets: (N, d+1) int32, 1-based vertex of each pixel's simplex corners.
        weights: (N, d+1) float32 barycentric weights.
        neighbours: (d+1, M, 2) int32, each vertex's previous and next neighbour along each
            lattice direction (1-based; 0: none).
    """

    offsets: np.ndarray
    weights: np.ndarray
    neighbours: np.ndarray

    def filter(self, values: np.ndarray) -> np.ndarray:
        """Approximate Gaussian filtering of ``values`` (N, C); the sum includes each point itself."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        out = np.empty_like(values)
        a = np.empty((self.num_vertices + 1, values.shape[1]), np.float32)
        filter_into(self, values, out, a, np.empty_like(a), np.float32(self.alpha))
        return out


def filter_into(
    lattice: Lattice,
    values: np.ndarray,
    out: np.ndarray,
    buf_a: np.ndarray,
    buf_b: np.ndarray,
    scale: float,
    *,
    accumulate: bool = False,
) -> None:
    """``out (+)= scale · splat-blur-slice(values)`` in place, with caller-owned scratch.

    Shape:
        values, out: (N, C) float32, C-contiguous. buf_a, buf_b: (M + 1, C) float32 scratch.
    """
    _filter(
        values,
        lattice.offsets,
        lattice.weights,
        lattice.neighbours,
        buf_a,
        buf_b,
        out,
        np.float32(scale),
        accumulate,
    )


def build_lattice(features: np.ndarray) -> Lattice:
    """The lattice of ``features`` (N, d): one row per point, already divided by the kernel widths."""
    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise PixelwiseError(f"lattice features must be a non-empty N×d array, got {feats.shape}")
    fmin, fmax, finite = _bounds(feats)
    if not finite:
        raise PixelwiseError("lattice features hold NaN or infinite values")
    packing = _packing(fmin, fmax)
    if packing is None:
        offsets, weights, neighbours = _build_general(feats)
    else:
        offsets, weights, neighbours = _build_packed(feats, *packing)
    return Lattice(offsets, weights, neighbours)
