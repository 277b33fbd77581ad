#!/usr/bin/env python3
"""How far Winograd's F(m×m, 3×3) lands from the exact convolution in f32 (not a test).

Builds each algorithm from its interpolation points (Cook-Toom: A^T and G from the points,
B^T solved so that the algorithm is exact), runs it in float32 as a kernel would (weights
and inputs transformed in f32, the channel sums accumulated in f32, the output transform in
f32), and prints the largest difference from a float64 direct convolution as a share of the
largest output, over random inputs in [-1, 1) (and the same after a ReLU) with weights
scaled by 1/sqrt(9·C).

This is why kernels/winograd.rs takes F(2×4, 3×3) at stride 1 (F(2, 3) down, F(4, 3)
along: about twice F(2×2, 3×3)'s error) and no larger tiles: their error, measured on a
kernel against burn's direct convolution, came out about three times the simulated one for
F(4×4, 3×3), past the 1e-5 every kernel is held to. F(3×4, 3×3) (F(3, 3) down: 2.5 products
an output against F(2×4)'s 3) simulates at 3.5e-6 to 8.6e-6 at 256 channels and 6.0e-6 to
1.05e-5 at 512 (over F(3, 3)'s fourth point 2, 1/2 or -1/2, inputs plain or after a ReLU):
at the limit before any of the kernel's own excess over the simulation, so not taken either.

Usage: python3 scripts/winograd_error.py   (numpy only)
"""
import numpy as np


def construct(m, r, points):
    """A^T (m×n), G (n×r), B^T (n×n) of F(m, r) at `points` and infinity."""
    n = m + r - 1
    assert len(points) == n - 1
    at, g = np.zeros((m, n)), np.zeros((n, r))
    for j, a in enumerate(points):
        at[:, j] = [a ** i for i in range(m)]
        f = np.prod([a - b for b in points if b != a])
        g[j] = [a ** k / f for k in range(r)]
    at[m - 1, n - 1] = g[n - 1, r - 1] = 1
    # sum_j A^T[i,j] G[j,k] B^T[j,l] = [l == i + k] for every i, k, l.
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for l in range(n):
                row = np.zeros((n, n))
                row[:, l] = at[i] * g[:, k]
                rows.append(row.ravel())
                rhs.append(float(l == i + k))
    rows, rhs = np.array(rows), np.array(rhs)
    bt = np.linalg.lstsq(rows, rhs, rcond=None)[0]
    assert np.allclose(rows @ bt, rhs, atol=1e-9), "points give no exact algorithm"
    return at, g, bt.reshape(n, n)


def error(m, points, channels, relu, seed=0, along=None):
    """F(m×m, 3×3) at `points`, or with `along` = (m2, points2) F(m×m2, 3×3): F(m, 3) down
    the rows, F(m2, 3) along them."""
    m2, points2 = along or (m, points)
    at, g, bt = (a.astype(np.float32) for a in construct(m, 3, points))
    at2, g2, bt2 = (a.astype(np.float32) for a in construct(m2, 3, points2))
    n, n2 = m + 2, m2 + 2
    tiles, tiles2 = 12 // m * 3, 12 // m2 * 3
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (channels, m * tiles + 2, m2 * tiles2 + 2)).astype(np.float32)
    if relu:
        x = np.maximum(x, 0)
    w = (rng.uniform(-1, 1, (channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    u = np.einsum("ij,cjk,lk->cil", g, w, g2).astype(np.float32)
    worst = largest = 0.0
    for ty in range(tiles):
        for tx in range(tiles2):
            d = x[:, ty * m:ty * m + n, tx * m2:tx * m2 + n2]
            v = np.einsum("ij,cjk,lk->cil", bt, d, bt2).astype(np.float32)
            acc = np.zeros((n, n2), np.float32)
            for c in range(channels):
                acc = (acc + u[c] * v[c]).astype(np.float32)
            y = (at @ acc @ at2.T).astype(np.float32)
            d64, w64 = d.astype(np.float64), w.astype(np.float64)
            exact = np.array([[np.sum(d64[:, i:i + 3, j:j + 3] * w64) for j in range(m2)]
                              for i in range(m)])
            worst = max(worst, np.abs(y - exact).max())
            largest = max(largest, np.abs(exact).max())
    return worst / largest


# (name, m, points, along): F(m×m, 3×3), or F(m×m2, 3×3) with along = (m2, points2).
CASES = [
    ("F(2x2, 3x3) 0 1 -1", 2, [0, 1, -1], None),
    ("F(2x4, 3x3) 0 1 -1 2 -2", 2, [0, 1, -1], (4, [0, 1, -1, 2, -2])),
    ("F(2x4, 3x3) 0 1 -1 1/2 -2", 2, [0, 1, -1], (4, [0, 1, -1, 0.5, -2])),
    ("F(3x4, 3x3) 0 1 -1 2", 3, [0, 1, -1, 2], (4, [0, 1, -1, 2, -2])),
    ("F(3x4, 3x3) 0 1 -1 1/2", 3, [0, 1, -1, 0.5], (4, [0, 1, -1, 2, -2])),
    ("F(3x4, 3x3) 0 1 -1 -1/2", 3, [0, 1, -1, -0.5], (4, [0, 1, -1, 2, -2])),
    ("F(3x3, 3x3) 0 1 -1 2", 3, [0, 1, -1, 2], None),
    ("F(3x3, 3x3) 0 1 -1 1/2", 3, [0, 1, -1, 0.5], None),
    ("F(3x3, 3x3) 0 1 -1 -1/2", 3, [0, 1, -1, -0.5], None),
    ("F(4x4, 3x3) 0 1 -1 1/2 -2", 4, [0, 1, -1, 0.5, -2], None),
]

if __name__ == "__main__":
    print(f"{'algorithm, points':<28} {'channels':>8} {'inputs':>9} {'after ReLU':>11}")
    for channels in (64, 256, 512):
        for name, m, points, along in CASES:
            plain = error(m, points, channels, False, along=along)
            relu = error(m, points, channels, True, along=along)
            print(f"{name:<28} {channels:>8} {plain:9.2e} {relu:11.2e}", flush=True)
