"""One resampling for every geometric augmentation: per-op affine matrices, composed, + fill modes + grid_sample.

Flips, rotation, scaling, shearing, translation and crops are all affine maps of the pixel grid. Each
op's matrix builder (here, used by the augmentation registry) gives a (B, 3, 3) forward map; :func:`compose`
multiplies them into one matrix per image and the image is interpolated once (chaining separate warps
would blur it once per op). An elastic displacement field is added to the same sampling grid.

Pixels that a warp uncovers come from outside the image; the fill mode decides what is there
(the numpy.pad names, shown for a row ``a b c d``):

    constant   k k | a b c d | k k      (augment.fill_value)
    edge       a a | a b c d | d d      (extend the border pixel)
    reflect    c b | a b c d | c b      (mirror about the border pixel)
    symmetric  b a | a b c d | d c      (mirror about the image edge, border pixel repeated)
    wrap       c d | a b c d | a b      (tile the image)

torch's grid_sample knows only zeros / border / reflection, so the source coordinates are folded
back into the image here first. kornia supplies the rotation and shear matrices and the elastic blur
(imported where used: it is slow to import); the 2x3 map is applied to the pixel grid directly
(kornia's transform_points, built for homographies, took 4x longer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

FILL_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def _centre(h: int, w: int, batch: int, device: torch.device | None) -> torch.Tensor:
    """(B, 2) the image centre (x, y) in pixels: what rotation, scaling and shearing turn about."""
    return torch.tensor([(w - 1) / 2, (h - 1) / 2], device=device).expand(batch, 2)


def shift_matrix(shift: torch.Tensor) -> torch.Tensor:
    """Forward maps (B, 3, 3) that move every pixel by ``shift`` (B, 2) pixels (x right, y down)."""
    m = torch.eye(3, device=shift.device).repeat(len(shift), 1, 1)
    m[:, :2, 2] = shift
    return m


def _rotate_scale(h: int, w: int, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    from kornia.geometry.conversions import convert_affinematrix_to_homography
    from kornia.geometry.transform import get_rotation_matrix2d

    centre = _centre(h, w, len(angle), angle.device)
    return convert_affinematrix_to_homography(get_rotation_matrix2d(centre, -angle, torch.stack([scale, scale], 1)))


def rotation_matrix(h: int, w: int, angle: torch.Tensor) -> torch.Tensor:
    """Forward maps (B, 3, 3): turn by ``angle`` (B,) degrees about the centre, clockwise as displayed (y down)."""
    return _rotate_scale(h, w, angle, torch.ones_like(angle))


def scale_matrix(h: int, w: int, scale: torch.Tensor) -> torch.Tensor:
    """Forward maps (B, 3, 3): zoom by ``scale`` (B,) about the centre (above 1 enlarges)."""
    return _rotate_scale(h, w, torch.zeros_like(scale), scale)


def shear_matrix(h: int, w: int, shear: torch.Tensor) -> torch.Tensor:
    """Forward maps (B, 3, 3): shear along x by ``shear`` (B,) degrees about the centre:
    x' = x - tan(shear) (y - cy)."""
    from kornia.geometry.transform import get_shear_matrix2d

    return get_shear_matrix2d(_centre(h, w, len(shear), shear.device), torch.deg2rad(shear), torch.zeros_like(shear))


def flip_matrix(h: int, w: int, on: torch.Tensor, axis: int) -> torch.Tensor:
    """Forward maps (B, 3, 3) that mirror the images where ``on`` (B,) bool: axis 0 left-right, 1 upside down."""
    m = torch.eye(3, device=on.device).repeat(len(on), 1, 1)
    sign = 1 - 2 * on.float()  # -1 where flipped
    m[:, axis, axis] = sign
    m[:, axis, 2] = (1 - sign) * ((w, h)[axis] - 1) / 2
    return m


def crop_matrix(h: int, w: int, box: torch.Tensor) -> torch.Tensor:
    """Forward maps (B, 3, 3) that blow the section ``box`` (B, 4) = (x0, y0, width, height), in pixel
    units, up to the whole h x w image: the lecture's crop ("sample a section, resize it to the image size")."""
    x0, y0, bw, bh = box.unbind(1)
    sx, sy = (w - 1) / (bw - 1).clamp_min(1e-6), (h - 1) / (bh - 1).clamp_min(1e-6)
    m = torch.zeros(len(box), 3, 3, device=box.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1
    m[:, 0, 2], m[:, 1, 2] = -x0 * sx, -y0 * sy
    return m


def compose(matrices: Sequence[torch.Tensor], batch: int, device: torch.device | None = None) -> torch.Tensor:
    """One forward map (B, 3, 3) per image: ``matrices[0] @ matrices[1] @ ...``, so the last is applied to
    the pixels first; the identity when there are none."""
    m = torch.eye(3, device=device).repeat(batch, 1, 1) if not matrices else matrices[0]
    for later in matrices[1:]:
        m = m @ later
    return m


def fold(coord: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Map pixel coordinates that fall outside 0..size-1 back inside, as the fill ``mode`` pads."""
    if mode in ("constant", "edge") or size == 1:
        return coord.clamp(0, size - 1)  # constant is masked by the caller
    if mode == "wrap":
        return torch.remainder(coord, size).clamp(0, size - 1)
    if mode == "reflect":  # period 2(size-1), mirror about the centres of the border pixels
        period = 2 * (size - 1)
        t = torch.remainder(coord, period)
        return (size - 1) - (t - (size - 1)).abs()
    if mode == "symmetric":  # period 2*size, mirror about the outer edges (-0.5 and size-0.5)
        t = torch.remainder(coord + 0.5, 2 * size)
        return (size - (t - size).abs() - 0.5).clamp(0, size - 1)
    raise ValueError(f"unknown fill mode {mode!r}")


def elastic_field(noise: torch.Tensor, alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    """Simard et al.'s elastic distortion: uniform noise (B, 2, H, W) in -1..1, smoothed by a Gaussian of
    ``sigma`` pixels and scaled by ``alpha`` (B,) pixels; returns displacements (B, H, W, 2) as (dx, dy)."""
    from kornia.filters import gaussian_blur2d

    h, w = noise.shape[-2:]
    limit = 2 * min(h, w) - 1  # the reflect padding of the blur needs kernel // 2 < size
    k = min(2 * math.ceil(3 * sigma) + 1, limit if limit % 2 else limit - 1)
    smooth = gaussian_blur2d(noise, (k, k), (sigma, sigma))
    return (smooth * alpha.view(-1, 1, 1, 1)).permute(0, 2, 3, 1)


def warp(x: torch.Tensor, matrix: torch.Tensor, fill: str = "constant", fill_value: float = 0.0,
         displacement: torch.Tensor | None = None) -> torch.Tensor:
    """Resample float images ``x`` (B, C, H, W) through forward maps ``matrix`` (B, 3, 3): output pixel p
    takes the (bilinear) value at matrix^-1 p (+ ``displacement`` (B, H, W, 2)), outside pixels by ``fill``."""
    b, _, h, w = x.shape
    inv = torch.linalg.inv(matrix.to(x.dtype))[:, :2, :, None, None]  # (B, 2, 3, 1, 1): source = inv @ (x, y, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    sx = inv[:, 0, 0] * cols + inv[:, 0, 1] * rows + inv[:, 0, 2]  # (B, H, W) source column of each output pixel
    sy = inv[:, 1, 0] * cols + inv[:, 1, 1] * rows + inv[:, 1, 2]
    if displacement is not None:
        sx, sy = sx + displacement[..., 0], sy + displacement[..., 1]
    grid = torch.stack([fold(sx, w, fill) * (2 / max(w - 1, 1)) - 1, fold(sy, h, fill) * (2 / max(h - 1, 1)) - 1], -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if fill == "constant":  # blend towards the fill value where the source lies outside (as padding would)
        inside = ((1 - (sx - sx.clamp(0, w - 1)).abs()).clamp_min(0)
                  * (1 - (sy - sy.clamp(0, h - 1)).abs()).clamp_min(0))[:, None]  # (B, 1, H, W) in 0..1
        out = out * inside + fill_value * (1 - inside)
    return out
