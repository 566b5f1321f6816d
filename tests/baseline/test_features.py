"""Hand-made features: HOG against scikit-image's, the histograms against numpy's, bag of words and pca against
their definitions, and the cache (same inputs -> the same file read back; other settings -> another file)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from babysit.baseline import features as Fe
from babysit.config import BaselineConfig


def test_the_names_are_the_ones_the_option_lists():
    assert Fe.FEATURES.names() == ["pixels", "color-hist", "hog", "bovw", "pca"]


def test_hog_equals_scikit_image_on_an_image(digits):
    from skimage.feature import hog

    x = digits.train.x[:3]
    ours = Fe.hog_features(x, orientations=9, cell=2)
    for i in range(3):
        theirs = hog(x[i, 0].numpy(), orientations=9, pixels_per_cell=(2, 2), cells_per_block=(2, 2),
                     block_norm="L2-Hys")
        np.testing.assert_allclose(ours[i].numpy(), theirs, rtol=1e-6, atol=1e-7)
    assert ours.shape == (3, 3 * 3 * 2 * 2 * 9)  # (8/2 - 1)^2 blocks of 2 x 2 cells of 9 bins


def test_hog_of_a_colour_image_equals_scikit_image():
    from skimage.data import astronaut
    from skimage.feature import hog

    img = astronaut()[::8, ::8]  # 64 x 64 x 3
    ours = Fe.hog_features(torch.from_numpy(img.copy()).permute(2, 0, 1)[None], orientations=8, cell=8)
    theirs = hog(img, orientations=8, pixels_per_cell=(8, 8), cells_per_block=(2, 2), channel_axis=-1)
    np.testing.assert_allclose(ours[0].numpy(), theirs, rtol=1e-6, atol=1e-7)


def test_intensity_histogram_of_grey_images_equals_numpy(digits):
    x = digits.train.x[:5]
    hist = Fe.color_histogram(x, bins=16)
    for i in range(5):
        counts, _ = np.histogram(x[i].numpy(), bins=16, range=(0, 256))
        np.testing.assert_allclose(hist[i].numpy(), counts / x[i].numel(), rtol=1e-6)


def test_hue_histogram_of_colour_images():
    # hue: red 0, yellow 1/6, green 1/3, blue 2/3: with 6 bins, bins 0, 1, 2 and 4
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)
    img = colours[torch.tensor([0, 0, 0, 1, 2, 2, 3, 3])].T.reshape(1, 3, 2, 4)  # 3 red, 1 green, 2 blue, 2 yellow
    hist = Fe.color_histogram(img, bins=6)
    torch.testing.assert_close(hist[0], torch.tensor([3, 2, 1, 0, 2, 0]) / 8.0, check_dtype=False)
    from skimage.color import rgb2hsv

    hue = rgb2hsv(img[0].permute(1, 2, 0).numpy())[..., 0].ravel()
    np.testing.assert_allclose(hist[0].numpy(), np.histogram(hue, bins=6, range=(0, 1))[0] / 8, atol=1e-7)


def test_patch_descriptors_are_brightness_and_contrast_normalised(digits):
    x = digits.train.x[:2]
    d = Fe.patch_descriptors(x, 3)  # stride 1 on 8 x 8: 6 x 6 patches of 9 values
    assert d.shape == (2, 36, 9)
    patch = x[1, 0, 2:5, 4:7].flatten().float() / 255  # patch (row 2, col 4) = index 2 * 6 + 4
    centred = patch - patch.mean()
    torch.testing.assert_close(d[1, 2 * 6 + 4], centred / (centred.std() + 10 / 255))


def test_bag_of_words_histograms(digits):
    splits = [digits.train.x[:400], digits.test.x]
    train, test = Fe.bag_of_words(splits, words=12, patch=3, seed=0)
    assert train.shape == (400, 12) and test.shape == (len(digits.test), 12)
    torch.testing.assert_close(test.sum(1), torch.ones(len(test)))
    assert torch.allclose(test * 36, (test * 36).round(), atol=1e-4)  # counts of the 36 patches of an image
    again = Fe.bag_of_words(splits, words=12, patch=3, seed=0)[1]
    torch.testing.assert_close(test, again)  # seeded: the same vocabulary


def test_pca_features_equal_scikit_learn_up_to_sign(digits):
    from sklearn.decomposition import PCA

    cfg = BaselineConfig(pca_components=10)
    ours_train, ours_test = Fe.FEATURES["pca"].compute([digits.train.x, digits.test.x], cfg, 0)
    pca = PCA(10).fit(digits.train.x.flatten(1).double().numpy() / 255)
    theirs = pca.transform(digits.test.x.flatten(1).double().numpy() / 255)
    signs = np.sign((ours_test.numpy() * theirs).sum(0))
    np.testing.assert_allclose(ours_test.numpy(), theirs * signs, rtol=1e-3, atol=1e-4)
    assert ours_train.shape == (len(digits.train), 10)


def test_features_are_cached_per_data_and_settings(digits, cache_home, monkeypatch):
    splits = [digits.train.x, digits.val.x]
    cfg = BaselineConfig(hog_orientations=6)
    first, path = Fe.compute_features("hog", splits, cfg)
    assert path is not None and path.is_file() and path.parent == cache_home / "babysit" / "features"
    calls = []
    real = Fe.hog_features
    monkeypatch.setattr(Fe, "hog_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, path2 = Fe.compute_features("hog", splits, cfg)
    assert path2 == path and calls == []  # read back, not computed
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    other, path3 = Fe.compute_features("hog", splits, BaselineConfig(hog_orientations=9))
    assert path3 != path and other[0].shape[1] != first[0].shape[1] and calls == [1, 1]
    _, path4 = Fe.compute_features("hog", [digits.train.x, digits.test.x], cfg)  # other images: another file
    assert path4 not in (path, path3)
    assert Fe.compute_features("hog", splits, BaselineConfig(hog_orientations=6, cache=False))[1] is None
    assert Fe.compute_features("pixels", splits, cfg)[1] is None  # never worth a file
    path.write_bytes(b"not a safetensors file")  # damaged: computed again and written over
    fixed, path5 = Fe.compute_features("hog", splits, cfg)
    assert path5 == path and torch.equal(fixed[1], first[1])
    assert not list(path.parent.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_an_unknown_feature_is_one_sentence(digits):
    from babysit.errors import BabysitError

    with pytest.raises(BabysitError, match="unknown baseline.features 'hogg'; choose one of pixels, color-hist, hog, "
                                           "bovw, pca; did you mean 'hog'"):
        Fe.compute_features("hogg", [digits.train.x], BaselineConfig())
    with pytest.raises(BabysitError, match="baseline.pca_components=100 is more than the 64 pixel values"):
        Fe.compute_features("pca", [digits.train.x], BaselineConfig(pca_components=100, cache=False))
