"""Preprocessing fitted on the training split only, then applied to every split.

The lecture's common pitfall: the statistics (mean image, per-channel mean and std, covariance)
must be computed over the training data alone and applied equally to train, val and test.
Pixels are first scaled from 0..255 to 0..1.

Kinds: ``none``, ``mean-image``, ``channel-mean``, ``channel-mean-std`` (x/255 - mean) / std;
``pca`` (centre with the mean image, project on the top k eigenvectors: (k, 1, 1) per image),
``pca-white`` (the same divided by sqrt(eigenvalue + eps)), ``zca`` (whitened and rotated back:
(C, H, W)), ``patch-white`` (a fixed conv whose filters whiten k x k patches: (C*k*k, H, W)).
The maths is in :mod:`babysit.data.whiten`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from babysit.config import DataConfig
from babysit.data import whiten
from babysit.errors import BabysitError
from babysit.registry import Registry

KINDS: Registry[str] = Registry("preprocessing")
"""The kinds ``--data.preprocess`` accepts, each with its one-line meaning (the maths is in :class:`Preprocessor`)."""
KINDS.add("none", "pixels scaled to 0..1")
KINDS.add("mean-image", "subtract the training mean image")
KINDS.add("channel-mean", "subtract the training mean of each channel")
KINDS.add("channel-mean-std", "subtract the training mean, divide by the std of each channel")
KINDS.add("pca", "project on the top k eigenvectors of the image covariance: (k, 1, 1) per image")
KINDS.add("pca-white", "pca divided by sqrt(eigenvalue + eps)")
KINDS.add("zca", "whitened and rotated back: (C, H, W)")
KINDS.add("patch-white", "a fixed conv whose filters whiten k x k patches: (C*k*k, H, W)")
BASIC = ("none", "mean-image", "channel-mean", "channel-mean-std")  # (x/255 - mean) / std, no covariance
MAX_DIM = 8192
"""Largest D = C*H*W for the full-image kinds (pca, pca-white, zca): their covariance is D x D."""


@dataclass(frozen=True)
class Preprocessor:
    """Statistics of the training split and how to apply them; build with :meth:`fit`."""

    kind: str
    mean: torch.Tensor  # (1, C, H, W) for mean-image, pca, pca-white, zca; (1, C, 1, 1) otherwise; pixels 0..1
    std: torch.Tensor  # same shape as mean; ones unless kind is channel-mean-std
    basis: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (D, k) covariance eigenvectors as
    # columns, largest eigenvalue first: pca kinds D = C*H*W (zca: k = D); patch-white D = k = C*p*p; else empty
    eigenvalues: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (D,) all of them, descending
    eps: float = 0.0  # whitening: divide by sqrt(eigenvalue + eps); 0 for the kinds that do not whiten
    _on_device: dict[torch.device, tuple[torch.Tensor, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)  # mean, std, applied weight per device

    @classmethod
    def fit(cls, x: torch.Tensor, kind: str, *, components: int = 0, variance: float = 0.99, eps: float = 1e-5,
            patch_size: int = 2, chunk: int = 8192) -> Preprocessor:
        """Fit on training images ``x`` (N, C, H, W) uint8, in float64; see the module docstring for kinds.

        ``components``: pca kinds keep the top k eigenvectors (0: the fewest holding ``variance`` of
        the total variance). ``eps`` regularises the whitening; ``patch_size`` is patch-white's k.
        """
        _check_args(kind, tuple(x.shape[1:]), components, variance, eps, patch_size)
        n, c, h, w = x.shape
        total = torch.zeros(c, h, w, dtype=torch.float64, device=x.device)
        total_sq = torch.zeros(c, dtype=torch.float64, device=x.device)
        for i in range(0, n, chunk):
            xb = x[i : i + chunk].to(torch.float64) / 255.0
            total += xb.sum(0)
            total_sq += (xb**2).sum((0, 2, 3))
        mean_image = (total / n).cpu()  # (C, H, W)
        total_sq = total_sq.cpu()
        if kind == "none":
            mean = torch.zeros(1, c, 1, 1, dtype=torch.float64)
        elif kind in ("mean-image", "pca", "pca-white", "zca"):
            mean = mean_image[None]
        else:
            mean = mean_image.mean((1, 2)).view(1, c, 1, 1)
        std = torch.ones_like(mean)
        if kind == "channel-mean-std":
            var = total_sq / (n * h * w) - mean.flatten() ** 2
            std = var.clamp_min(1e-12).sqrt().view(1, c, 1, 1)
        if kind in BASIC:
            return cls(kind, mean.float(), std.float())
        if kind == "patch-white":
            cov = whiten.patch_covariance(x, mean.flatten(), patch_size, chunk)
        else:
            cov = whiten.image_covariance(x, mean_image, chunk)
        values, vectors = whiten.eigh_descending(cov)
        k = len(values)
        if kind in ("pca", "pca-white"):
            k = components or whiten.components_for(values, variance)
        return cls(kind, mean.float(), std.float(), vectors[:, :k].float().contiguous().cpu(), values.float().cpu(),
                   0.0 if kind == "pca" else float(eps))

    @classmethod
    def from_config(cls, x: torch.Tensor, data: DataConfig) -> Preprocessor:
        """:meth:`fit` with ``data.preprocess`` and its settings (pca_components, pca_variance, ...)."""
        return cls.fit(x, data.preprocess, components=data.pca_components, variance=data.pca_variance,
                       eps=data.whiten_eps, patch_size=data.patch_size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to images (N, C, H, W) of pixels 0..255, uint8 or float; float32 on ``x``'s device."""
        mean, std, weight = self._tensors(x.device)
        z = x.float() / 255.0 - mean
        if self.kind in BASIC:
            return z / std
        if self.kind == "patch-white":  # replicate k-1 pixels right and bottom so the output keeps H x W
            k = weight.shape[-1]
            return F.conv2d(F.pad(z, (0, k - 1, 0, k - 1), mode="replicate"), weight)
        shape = self.output_shape((x.shape[1], x.shape[2], x.shape[3]))
        return (z.flatten(1) @ weight).view(len(x), *shape)

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) of one processed image: (k, 1, 1) for pca kinds, (C*p*p, H, W) for patch-white."""
        if self.kind in ("pca", "pca-white"):
            return (self.basis.shape[1], 1, 1)
        if self.kind == "patch-white":
            return (self.basis.shape[1], input_shape[1], input_shape[2])
        return input_shape

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Processed tensors back to image shape, for pictures.

        pca: the reconstruction z @ U_k^T + mean in 0..255 (what k components keep); pca-white:
        z @ U_k^T (whitened, shown in pixel space); zca and patch-white: z as it is; the first four
        kinds: :meth:`invert`.
        """
        if self.kind in BASIC:
            return self.invert(z)
        if self.kind in ("zca", "patch-white"):
            return z
        image = (z.flatten(1) @ self.basis.to(z.device).T).view(len(z), *self.mean.shape[1:])
        return (image + self.mean.to(z.device)) * 255.0 if self.kind == "pca" else image

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        """Map preprocessed images back to 0..255 floats (for pictures and tests).

        Exact for every kind but pca and pca-white with dropped components, which give the
        reconstruction from the kept ones.
        """
        mean, std = self.mean.to(z.device), self.std.to(z.device)
        if self.kind in BASIC:
            return (z * std + mean) * 255.0
        if self.kind == "pca":
            return self.to_image(z)
        # undo the whitening: U diag(sqrt(lambda + eps)) rotates whitened coordinates back to pixels
        unwhite = (self.basis.double() / whiten.whitening_scale(self.eigenvalues[: self.basis.shape[1]], self.eps))
        if self.kind == "patch-white":  # a pixel is the (c, 0, 0) entry of the patch at its own position
            k2 = self.basis.shape[0] // mean.shape[1]
            rows = unwhite[::k2].float().to(z.device)  # (C, C*k*k)
            return (torch.einsum("cd,ndhw->nchw", rows, z) + mean) * 255.0
        if self.kind == "zca":
            unwhite = unwhite @ self.basis.double().T
        image = (z.flatten(1) @ unwhite.float().to(z.device).T).view(len(z), *mean.shape[1:])
        return (image + mean) * 255.0

    @property
    def kept_variance(self) -> float:
        """Share of the training variance held by the kept components (1.0 where nothing is dropped)."""
        if self.kind not in ("pca", "pca-white"):
            return 1.0
        total = float(self.eigenvalues.double().sum())
        return float(self.eigenvalues[: self.basis.shape[1]].double().sum()) / total if total > 0 else 1.0

    def describe(self) -> str:
        """One line for people, e.g. ``pca: 41 of 64 components keep 99.0% of the variance``."""
        c, h, w = self.mean.shape[1:]
        d, k = self.basis.shape if self.basis.ndim == 2 else (0, 0)
        p = round((d // c) ** 0.5)  # patch-white's patch side
        if self.kind in ("pca", "pca-white"):
            text = f"{self.kind}: {k} of {d} components keep {100 * self.kept_variance:.1f}% of the variance"
            return text + (f", eps {self.eps:g}" if self.kind == "pca-white" else "")
        return {
            "none": "none: pixels scaled to 0..1",
            "mean-image": f"mean-image: subtract the {c}x{h}x{w} training mean image",
            "channel-mean": f"channel-mean: subtract the training mean of each of {c} channel(s)",
            "channel-mean-std": f"channel-mean-std: subtract the training mean, divide by the std of each of {c} "
                                "channel(s)",
            "zca": f"zca: {d} dims, eps {self.eps:g}",
            "patch-white": f"patch-white: {p}x{p} patches -> {d} channels, eps {self.eps:g}",
        }[self.kind]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, contiguous, safetensors-ready; the kind goes in the file's meta."""
        state = {"mean": self.mean, "std": self.std}
        if self.kind not in BASIC:
            state |= {"basis": self.basis, "eigenvalues": self.eigenvalues,
                      "eps": torch.tensor([self.eps], dtype=torch.float64)}
        return state

    @classmethod
    def from_state_dict(cls, kind: str, state: dict[str, torch.Tensor]) -> Preprocessor:
        """Inverse of :meth:`state_dict`; files of runs older than the whitening kinds load unchanged."""
        if kind in BASIC:
            return cls(kind, state["mean"], state["std"])
        missing = sorted({"basis", "eigenvalues", "eps"} - state.keys())
        if missing:
            raise BabysitError(f"the saved {kind} preprocessing has no {', '.join(missing)}; put back the run's own "
                               "preprocess.safetensors.")
        return cls(kind, state["mean"], state["std"], state["basis"], state["eigenvalues"], float(state["eps"]))

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """mean, std and the applied weight on ``device``, made once per device (batches call this often)."""
        if device not in self._on_device:
            self._on_device[device] = (self.mean.to(device), self.std.to(device), self._weight().to(device))
        return self._on_device[device]

    def _weight(self) -> torch.Tensor:
        """What multiplies the centred pixels: U_k (pca), U_k / sqrt(lambda + eps) (pca-white), the ZCA
        matrix (zca) or the conv filters (patch-white); float32."""
        if self.kind in BASIC:
            return torch.zeros(0)
        if self.kind == "pca":
            return self.basis
        if self.kind == "zca":
            return whiten.zca_matrix(self.basis, self.eigenvalues, self.eps).float()
        if self.kind == "patch-white":
            return whiten.patch_filters(self.basis, self.eigenvalues, self.eps, self.mean.shape[1]).float()
        k = self.basis.shape[1]
        return (self.basis.double() * whiten.whitening_scale(self.eigenvalues[:k], self.eps)).float()


def _check_args(kind: str, shape: tuple[int, ...], components: int, variance: float, eps: float,
                patch_size: int) -> None:
    """The settings a user can get wrong, each with one sentence saying how to fix it."""
    KINDS.get(kind)
    c, h, w = shape
    d = c * h * w
    if kind in ("pca", "pca-white", "zca") and d > MAX_DIM:
        raise BabysitError(f"{kind} on {c}x{h}x{w} images would need a {d}x{d} covariance (D = C*H*W above "
                           f"{MAX_DIM}); use data.preprocess=patch-white instead, or smaller images via data.size.")
    if kind in ("pca", "pca-white") and not 0 <= components <= d:
        raise BabysitError(f"data.pca_components={components} but {c}x{h}x{w} images have only {d} dimensions; "
                           f"choose 1..{d}, or 0 to keep the fewest components holding data.pca_variance.")
    if kind in ("pca", "pca-white") and not 0 < variance <= 1:
        raise BabysitError(f"data.pca_variance={variance} is not a share of the variance; choose a value in (0, 1], "
                           "e.g. 0.99.")
    if kind in ("pca-white", "zca", "patch-white") and not eps > 0:
        raise BabysitError(f"data.whiten_eps={eps} must be positive (it keeps 1/sqrt(eigenvalue + eps) finite); "
                           "use e.g. 1e-5.")
    if kind == "patch-white" and not 1 <= patch_size <= min(h, w):
        raise BabysitError(f"data.patch_size={patch_size} does not fit {h}x{w} images; choose 1..{min(h, w)}.")
