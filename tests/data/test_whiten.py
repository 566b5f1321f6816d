"""PCA, PCA whitening, ZCA and patch whitening against the cs231n notes' numpy code, on real digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from babysit.config import DataConfig
from babysit.data.preprocess import KINDS, Preprocessor
from babysit.data.sources import load_dataset
from babysit.data.split import Splits, split_dataset
from babysit.data.whiten import patch_columns, patch_filters
from babysit.errors import BabysitError
from babysit.train.checkpoint import load_checkpoint, save_checkpoint

EPS = 1e-5


@pytest.fixture(scope="module")
def splits() -> Splits:
    return split_dataset(load_dataset("digits"), seed=0)


@pytest.fixture(scope="module")
def notes(splits: Splits) -> dict[str, np.ndarray]:
    """The notes' recipe, line by line, in float64 numpy on the training split."""
    X = splits.train.x.reshape(len(splits.train), -1).numpy().astype(np.float64) / 255
    X -= np.mean(X, axis=0)
    cov = X.T @ X / X.shape[0]
    U, S, V = np.linalg.svd(cov)
    Xrot = X @ U
    Xwhite = Xrot / np.sqrt(S + EPS)
    return {"X": X, "U": U, "S": S, "Xwhite": Xwhite}


def _cov(z: torch.Tensor) -> np.ndarray:
    """Covariance of the rows of ``z`` (N, D), float64, normalised by N as in the notes."""
    a = z.double().numpy()
    a = a - a.mean(0)
    return a.T @ a / len(a)


def test_pca_white_matches_the_notes(splits, notes):
    pre = Preprocessor.fit(splits.train.x, "pca-white", components=64, eps=EPS)
    ours = pre(splits.train.x).flatten(1).double().numpy()
    sign = np.where((ours * notes["Xwhite"]).sum(0) < 0, -1.0, 1.0)  # an eigenvector's sign is arbitrary
    assert np.abs(ours * sign - notes["Xwhite"]).max() < 1e-4
    assert np.allclose(pre.eigenvalues.double().numpy(), notes["S"], atol=1e-7)


def test_whitened_covariance_is_identity_where_eigenvalues_dominate(splits, notes):
    """cov(Xwhite) = diag(S/(S+eps)); cov(Xzca) = U diag(S/(S+eps)) U^T; both ~ I where S >> eps."""
    U, S = notes["U"], notes["S"]
    shrink = S / (S + EPS)
    white = Preprocessor.fit(splits.train.x, "pca-white", components=64, eps=EPS)(splits.train.x).flatten(1)
    assert np.abs(_cov(white) - np.diag(shrink)).max() < 1e-5
    zca = Preprocessor.fit(splits.train.x, "zca", eps=EPS)(splits.train.x).flatten(1)
    assert np.abs(_cov(zca) - U @ np.diag(shrink) @ U.T).max() < 1e-5
    big = U[:, S > 1000 * EPS]  # shrink >= 0.999 there
    assert np.abs(big.T @ _cov(zca) @ big - np.eye(big.shape[1])).max() < 2e-3
    assert np.abs(_cov(white)[: big.shape[1], : big.shape[1]] - np.eye(big.shape[1])).max() < 2e-3


def test_pca_keeps_the_stated_variance(splits, notes):
    S = notes["S"]
    pre = Preprocessor.fit(splits.train.x, "pca", variance=0.9)
    k = pre.basis.shape[1]
    assert S[:k].sum() / S.sum() >= 0.9 > S[: k - 1].sum() / S.sum()
    assert pre.kept_variance == pytest.approx(S[:k].sum() / S.sum(), rel=1e-6)
    assert pre.describe() == f"pca: {k} of 64 components keep {100 * S[:k].sum() / S.sum():.1f}% of the variance"
    assert pre(splits.train.x).shape == (len(splits.train), k, 1, 1)


@pytest.mark.parametrize("k", [5, 20, 64])
def test_pca_reconstruction_error_is_the_dropped_variance(splits, notes, k):
    """x_c - x_hat = sum_{j>k} (x_c . u_j) u_j, so mean ||x_c - x_hat||^2 = sum_{j>k} u_j^T cov u_j
    = sum_{j>k} lambda_j; per pixel that is divided by D = 64."""
    x = splits.train.x
    pre = Preprocessor.fit(x, "pca", components=k)
    z = pre(x)
    assert z.shape == (len(x), k, 1, 1) and pre.output_shape((1, 8, 8)) == (k, 1, 1)
    mse = ((pre.to_image(z).double() - x.double()) / 255).pow(2).mean().item()
    assert torch.equal(pre.invert(z), pre.to_image(z))  # pca's inverse is the same reconstruction
    assert mse == pytest.approx(notes["S"][k:].sum() / 64, rel=1e-3, abs=1e-9)


def test_statistics_see_only_the_training_split(splits):
    x, val = splits.train.x, splits.val.x.clone().fill_(255)
    for kind in ("pca", "zca", "patch-white"):
        pre = Preprocessor.fit(x, kind, components=10)
        again = Preprocessor.fit(x, kind, components=10)  # after val was poisoned
        assert all(torch.equal(a, b) for a, b in zip(pre.state_dict().values(), again.state_dict().values()))
        leaked = Preprocessor.fit(torch.cat([x, val]), kind, components=10)
        assert not torch.allclose(pre.mean, leaked.mean)
    pca = Preprocessor.fit(x, "pca", components=10)  # val is projected with train's mean and eigenvectors
    assert torch.allclose(pca(val).flatten(1), (1 - pca.mean).flatten(1) @ pca.basis, atol=1e-5)


def test_patch_white_filters_and_output(splits):
    """Filters are the eigenvectors of the 2x2 patch covariance over sqrt(lambda + eps); inside the
    image the output channels then have covariance diag(lambda/(lambda+eps)) exactly, which is within
    eps/lambda_min (< 3e-4 on digits, lambda_min ~ 0.036) of the identity."""
    x = splits.train.x
    pre = Preprocessor.fit(x, "patch-white", patch_size=2, eps=EPS)
    out = pre(x)
    assert out.shape == (len(x), 4, 8, 8) and pre.output_shape((1, 8, 8)) == (4, 8, 8)
    # reference: every 2x2 patch of the channel-centred 0..1 images, flattened (row, column)
    x01 = x.double().numpy()[:, 0] / 255
    patches = np.lib.stride_tricks.sliding_window_view(x01 - x01.mean(), (2, 2), axis=(1, 2)).reshape(-1, 4)
    lam, vec = np.linalg.eigh(np.cov(patches.T, bias=True))
    lam, vec = lam[::-1], vec[:, ::-1]
    ref = (vec / np.sqrt(lam + EPS)).T  # (4 filters, 4 taps)
    ours = patch_filters(pre.basis, pre.eigenvalues, pre.eps, 1).reshape(4, 4).numpy()
    sign = np.where((ours * ref).sum(1) < 0, -1.0, 1.0)[:, None]
    assert np.abs(ours * sign - ref).max() < 1e-3 * np.abs(ref).max()
    inside = out[:, :, :7, :7].permute(0, 2, 3, 1).reshape(-1, 4)  # positions whose patch is in the image
    assert np.abs(inside.double().numpy() - patches @ ours.T).max() < 1e-4
    cov = _cov(inside)
    assert np.abs(cov - np.diag(lam / (lam + EPS))).max() < 1e-5
    assert np.abs(cov - np.eye(4)).max() < EPS / lam.min() + 1e-5


def test_patch_white_keeps_size_with_replicated_edge():
    """The last row/column sees its own pixels repeated: a horizontal ramp with patch 3 gives a
    right edge equal to the conv of the ramp's last pixel repeated three times."""
    x = torch.randint(0, 256, (50, 3, 6, 5), dtype=torch.uint8)
    pre = Preprocessor.fit(x, "patch-white", patch_size=3)
    out = pre(x)
    assert out.shape == (50, 27, 6, 5)
    weight = patch_filters(pre.basis, pre.eigenvalues, pre.eps, 3).float()
    corner = (x[:, :, -1:, -1:].float() / 255 - pre.mean).expand(-1, -1, 3, 3)
    assert torch.allclose(out[:, :, -1, -1], F.conv2d(corner, weight)[:, :, 0, 0], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(splits, tmp_path: Path, kind):
    x = splits.train.x[:400]
    pre = Preprocessor.fit(x, kind, components=12, eps=3e-4)
    save_checkpoint(tmp_path / "pre.safetensors", pre.state_dict(), {"kind": pre.kind})
    state, meta = load_checkpoint(tmp_path / "pre.safetensors")
    back = Preprocessor.from_state_dict(meta["kind"], state)
    assert torch.equal(pre(splits.val.x), back(splits.val.x))
    assert back.describe() == pre.describe() and back.kept_variance == pre.kept_variance
    assert back.eps == pre.eps


@pytest.mark.parametrize("kind", KINDS)
def test_uint8_and_float_pixels_agree(splits, kind):
    pre = Preprocessor.fit(splits.train.x, kind, components=30)
    x = splits.val.x
    z = pre(x)
    assert z.dtype == torch.float32
    assert torch.equal(z, pre(x.float())) and torch.equal(z, pre(x.double()))
    assert pre.output_shape((1, 8, 8)) == tuple(z.shape[1:])


@pytest.mark.parametrize("kind", ["pca-white", "zca", "patch-white", "mean-image"])
def test_invert_undoes_the_whitening(splits, kind):
    pre = Preprocessor.fit(splits.train.x, kind, components=64)
    assert torch.allclose(pre.invert(pre(splits.val.x)), splits.val.x.float(), atol=0.05)
    channels = 4 if kind == "patch-white" else 1  # patch-white's picture is its processed channels
    assert pre.to_image(pre(splits.val.x)).shape == (len(splits.val), channels, 8, 8)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_patch_columns_match_unfold(k):
    x = torch.randn(4, 3, 7, 6, dtype=torch.float64)
    assert torch.equal(patch_columns(x, k), F.unfold(x, k).transpose(0, 1).reshape(3 * k * k, -1))


def test_chunked_fit_matches_one_pass(splits):
    for kind in ("zca", "patch-white"):
        one = Preprocessor.fit(splits.train.x, kind)
        chunked = Preprocessor.fit(splits.train.x, kind, chunk=100)
        assert torch.allclose(one.eigenvalues, chunked.eigenvalues, rtol=1e-5, atol=1e-10)


def test_old_runs_with_mean_and_std_still_load(splits):
    old = {"mean": torch.full((1, 1, 1, 1), 0.3), "std": torch.full((1, 1, 1, 1), 0.2)}
    pre = Preprocessor.from_state_dict("channel-mean-std", old)
    assert torch.allclose(pre(splits.val.x), (splits.val.x.float() / 255 - 0.3) / 0.2)
    with pytest.raises(BabysitError, match="saved zca preprocessing has no basis, eigenvalues, eps"):
        Preprocessor.from_state_dict("zca", old)


def test_from_config_and_describe(splits):
    pre = Preprocessor.from_config(splits.train.x, DataConfig(preprocess="pca-white", pca_components=7,
                                                               whiten_eps=1e-3))
    assert pre.basis.shape == (64, 7) and pre.eps == 1e-3
    assert pre.describe().startswith("pca-white: 7 of 64 components keep ") and pre.describe().endswith("eps 0.001")
    assert Preprocessor.fit(splits.train.x, "zca").describe() == "zca: 64 dims, eps 1e-05"
    assert Preprocessor.fit(splits.train.x, "patch-white").describe() == "patch-white: 2x2 patches -> 4 channels, " \
                                                                         "eps 1e-05"
    assert Preprocessor.fit(splits.train.x, "zca", components=3).basis.shape == (64, 64)  # zca drops nothing


def test_user_mistakes_are_one_sentence_errors(splits):
    big = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    with pytest.raises(BabysitError, match=r"zca on 3x64x64 images would need a 12288x12288 covariance .*"
                                           r"use data.preprocess=patch-white instead"):
        Preprocessor.fit(big, "zca")
    assert Preprocessor.fit(big, "patch-white").output_shape((3, 64, 64)) == (12, 64, 64)
    with pytest.raises(BabysitError, match="data.pca_components=65 but 1x8x8 images have only 64 dimensions"):
        Preprocessor.fit(splits.train.x, "pca", components=65)
    with pytest.raises(BabysitError, match="data.whiten_eps=0 must be positive"):
        Preprocessor.fit(splits.train.x, "zca", eps=0)
    with pytest.raises(BabysitError, match="data.patch_size=9 does not fit 8x8 images"):
        Preprocessor.fit(splits.train.x, "patch-white", patch_size=9)
    with pytest.raises(BabysitError, match="unknown preprocessing 'pca-whitening'; choose one of none, "):
        Preprocessor.fit(splits.train.x, "pca-whitening")
