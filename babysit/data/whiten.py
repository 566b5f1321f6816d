"""The maths behind PCA, PCA whitening, ZCA whitening and patch whitening (cs231n "Data preprocessing").

The notes' recipe, on pixels scaled to 0..1::

    X -= mean(X, axis=0); cov = X.T @ X / N; U, S, V = svd(cov)
    Xrot_reduced = X @ U[:, :k]                      # pca
    Xwhite = X @ U / sqrt(S + eps)                   # pca-white
    Xzca = Xwhite @ U.T                              # zca: whiten, then rotate back to pixel space

Patch whitening (as in airbench) applies the same idea to k x k patches: the eigenvectors of the
(C*k*k)^2 patch covariance, scaled by 1/sqrt(lambda + eps), become the filters of a fixed conv.
Statistics are accumulated in float64, chunk by chunk, so MNIST (60000 x 784) fits comfortably.
"""

from __future__ import annotations

import torch


def image_covariance(x: torch.Tensor, mean: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """cov = X.T @ X / N of the flattened images X = x/255 - mean; float64 (D, D), D = C*H*W.

    ``x`` (N, C, H, W) holds pixels 0..255, ``mean`` (C, H, W) is the training mean image in 0..1.
    """
    n = x.shape[0]
    flat_mean = mean.reshape(1, -1).to(x.device, torch.float64)
    cov = torch.zeros(flat_mean.shape[1], flat_mean.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, n, chunk):
        xc = x[i : i + chunk].reshape(-1, flat_mean.shape[1]).to(torch.float64) / 255.0 - flat_mean
        cov += xc.T @ xc
    return cov / n


def patch_covariance(x: torch.Tensor, channel_mean: torch.Tensor, k: int, chunk: int = 8192) -> torch.Tensor:
    """Covariance (C*k*k, C*k*k), float64, of every k x k patch lying inside the images.

    Pixels are scaled to 0..1 and centred with ``channel_mean`` (C,); a patch flattens as
    (channel, row, column), the order of a conv weight (out, C, k, k).
    """
    n, c, h, w = x.shape
    d = c * k * k
    positions = (h - k + 1) * (w - k + 1)
    step = max(1, chunk * c * h * w // (d * positions))  # a chunk of patches is about as big as `chunk` images
    mean = channel_mean.reshape(1, c, 1, 1).to(x.device, torch.float64)
    total = torch.zeros(d, dtype=torch.float64, device=x.device)
    total_outer = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for i in range(0, n, step):
        xc = x[i : i + step].to(torch.float64) / 255.0 - mean
        p = patch_columns(xc, k)  # (C*k*k, n_chunk * positions)
        total += p.sum(1)
        total_outer += p @ p.T
    count = n * positions
    patch_mean = total / count
    return total_outer / count - torch.outer(patch_mean, patch_mean)


def patch_columns(x: torch.Tensor, k: int) -> torch.Tensor:
    """Every k x k patch inside ``x`` (N, C, H, W) as a column: (C*k*k, N*(H-k+1)*(W-k+1)), rows in
    (channel, row, column) order like ``F.unfold``; built from slices, which is faster on CPU here."""
    n, c, h, w = x.shape
    shifted = [x[:, ch, a : a + h - k + 1, b : b + w - k + 1] for ch in range(c) for a in range(k) for b in range(k)]
    return torch.stack(shifted).reshape(c * k * k, -1)


def eigh_descending(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues (D,), eigenvectors (D, D) as columns) of a symmetric ``cov``, largest first.

    Rounding can leave the eigenvalues of a singular covariance slightly below zero; they are
    clamped to 0 so that sqrt(lambda + eps) is always real.
    """
    values, vectors = torch.linalg.eigh(cov)
    return values.flip(0).clamp_min(0.0), vectors.flip(1).contiguous()


def components_for(eigenvalues: torch.Tensor, variance: float) -> int:
    """The fewest leading components whose eigenvalues hold at least ``variance`` of the total."""
    total = float(eigenvalues.sum())
    if total <= 0.0:
        return 1  # every training image is the same: nothing to keep, but keep the shape valid
    share = eigenvalues.to(torch.float64).cumsum(0) / total
    return min(int((share < variance).sum()) + 1, eigenvalues.numel())


def whitening_scale(eigenvalues: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / sqrt(lambda + eps), float64: what divides each rotated coordinate."""
    return 1.0 / (eigenvalues.to(torch.float64) + eps).sqrt()


def zca_matrix(basis: torch.Tensor, eigenvalues: torch.Tensor, eps: float) -> torch.Tensor:
    """U diag(1/sqrt(lambda + eps)) U^T (D, D): whiten, then rotate back to pixel space."""
    u = basis.to(torch.float64)
    return (u * whitening_scale(eigenvalues, eps)) @ u.T


def patch_filters(basis: torch.Tensor, eigenvalues: torch.Tensor, eps: float, channels: int) -> torch.Tensor:
    """Conv weight (C*k*k, C, k, k): filter i is eigenvector i divided by sqrt(lambda_i + eps)."""
    d = basis.shape[0]
    k = round((d // channels) ** 0.5)
    return (basis.to(torch.float64) * whitening_scale(eigenvalues, eps)).T.reshape(d, channels, k, k)
