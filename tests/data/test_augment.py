"""Augmentation: fill modes against numpy.pad, each op's contract, seeding, mixing labels, property tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from babysit import config as C
from babysit.data.augment import (
    AUGMENTATIONS,
    Augment,
    OpInfo,
    augment_warnings,
    check_augment,
    make_augment,
    parse_op,
    parse_pipeline,
)
from babysit.data.named import Traits
from babysit.data.sources import load_dataset
from babysit.data.warp import (
    compose,
    crop_matrix,
    flip_matrix,
    rotation_matrix,
    scale_matrix,
    shear_matrix,
    shift_matrix,
    warp,
)
from babysit.errors import BabysitError

# One token per op with an argument that suits 8 x 8 digits.
EXAMPLES = ["flip-h", "flip-v", "rotate-15", "scale-0.2", "shear-10", "translate-2", "crop-6", "resized-crop-0.5",
            "elastic-6-2", "brightness-0.2", "contrast-0.3", "noise-0.05", "cutout-3", "mixup-0.4", "cutmix-1"]
NUMPY_PAD = {"constant": "constant", "edge": "edge", "reflect": "reflect", "symmetric": "symmetric", "wrap": "wrap"}


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.train.x[:32], ds.train.y[:32]


def test_examples_cover_every_registered_op():
    assert {parse_op(t).name for t in EXAMPLES} == set(AUGMENTATIONS)


@pytest.mark.parametrize("mode", list(NUMPY_PAD))
@pytest.mark.parametrize("dx,dy", [(1, 0), (-2, 0), (0, 3), (2, -1), (-3, -3)])
def test_fill_modes_give_numpy_pad_border_pixels_on_a_4x4(mode, dx, dy):
    """Shift a hand-made 4x4 by whole pixels: the uncovered pixels are exactly numpy.pad's for that mode:
    out[y, x] = padded[y - dy, x - dx]."""
    img = np.arange(1, 17, dtype=np.float32).reshape(4, 4)  # 1 .. 16, row by row
    m = shift_matrix(torch.tensor([[float(dx), float(dy)]]))
    out = warp(torch.from_numpy(img)[None, None], m, mode, fill_value=-7.0)[0, 0].numpy()
    kw = {"constant_values": -7.0} if mode == "constant" else {}
    padded = np.pad(img, 4, mode=NUMPY_PAD[mode], **kw)
    expected = padded[4 - dy : 8 - dy, 4 - dx : 8 - dx]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_fill_modes_written_out_for_a_shift_right_by_two():
    """The lecture's five ways to fill the gap, for the row 1 2 3 4 shifted two pixels right."""
    row = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]] * 4]])
    m = shift_matrix(torch.tensor([[2.0, 0.0]]))
    first_two = {mode: warp(row, m, mode, fill_value=0.0)[0, 0, 0, :2].tolist() for mode in NUMPY_PAD}
    assert first_two == {"constant": [0, 0], "edge": [1, 1], "reflect": [3, 2], "symmetric": [2, 1], "wrap": [3, 4]}


def test_flip_rotate_and_crop_matrices_move_pixels_where_expected():
    img = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    assert torch.equal(warp(img, flip_matrix(4, 4, torch.tensor([True]), axis=0)), img.flip(-1))
    assert torch.equal(warp(img, flip_matrix(4, 4, torch.tensor([True]), axis=1)), img.flip(-2))
    turned = warp(img, rotation_matrix(4, 4, torch.tensor([90.0])))
    assert torch.allclose(turned, torch.rot90(img, -1, (2, 3)), atol=1e-4)  # a quarter turn, clockwise as shown
    zoomed = warp(img, crop_matrix(4, 4, torch.tensor([[1.0, 1.0, 2.0, 2.0]])))  # the centre 2x2 blown up
    assert zoomed[0, 0, 0, 0] == img[0, 0, 1, 1] and zoomed[0, 0, 3, 3] == img[0, 0, 2, 2]
    assert torch.equal(warp(img, compose([], 1)), img)  # the identity leaves pixels untouched


@pytest.mark.parametrize("token", EXAMPLES)
def test_each_op_keeps_shape_dtype_and_label_count(digits, token):
    x, y = digits
    aug = Augment(parse_pipeline([token]), 10, seed=0, mean_pixel=torch.full((1,), 40.0))
    out, targets = aug.pixels(x, y, step=3)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert len(targets) == len(y)
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    if AUGMENTATIONS[parse_op(token).name].stage == "mixing":
        assert targets.shape == (len(y), 10)
        assert torch.allclose(targets.sum(1), torch.ones(len(y)))
    else:
        assert torch.equal(targets, y)
    assert not torch.equal(out, x.float()), f"{token} changed nothing"


def test_same_seed_and_step_give_the_same_batch_and_others_differ(digits):
    x, y = digits
    ops = parse_pipeline(["flip-h", "rotate-10", "elastic-6-2", "noise-0.05", "cutout-3", "mixup-0.4"])
    a, b = Augment(ops, 10, seed=7), Augment(ops, 10, seed=7)
    torch.manual_seed(0)
    xa, ya = a.pixels(x, y, step=11)
    torch.manual_seed(123)  # the global RNG (dropout's) plays no part
    xb, yb = b.pixels(x, y, step=11)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, a.pixels(x, y, step=12)[0])
    assert not torch.equal(xa, Augment(ops, 10, seed=8).pixels(x, y, step=11)[0])


def flat_images(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """n images, image i filled with the value 20 (i + 1) and labelled i: a pixel tells whose it is."""
    x = torch.stack([torch.full((1, 8, 8), 20 * (i + 1), dtype=torch.uint8) for i in range(n)])
    return x, torch.arange(n)


def test_mixup_pixels_are_the_label_weighted_blend():
    """x~_i = lambda x_i + (1 - lambda) x_j with targets lambda onehot(y_i) + (1 - lambda) onehot(y_j):
    with one class per image, every pixel of x~_i equals sum_k t_ik x_k."""
    x, y = flat_images()
    out, t = Augment(parse_pipeline(["mixup-0.4"]), 10, seed=1).pixels(x, y, step=0)
    expected = (t @ x.float().flatten(1)).view_as(out)
    assert torch.allclose(out, expected, atol=1e-3)
    assert torch.allclose(t.sum(1), torch.ones(10)) and bool((t >= 0).all())
    assert ((t > 0).sum(1) <= 2).all() and (t.max(1).values < 1).any()  # at most two classes, some really mixed


def test_cutmix_label_share_equals_the_pasted_area():
    x, y = flat_images()
    out, t = Augment(parse_pipeline(["cutmix-1"]), 10, seed=2).pixels(x, y, step=5)
    for i in range(10):
        shares = torch.tensor([(out[i] == 20 * (k + 1)).float().mean() for k in range(10)])
        assert torch.allclose(t[i], shares, atol=1e-6), i  # label mass = share of the image each source covers
    assert torch.allclose(t.sum(1), torch.ones(10)) and (t.max(1).values < 1).any()


def test_cutout_writes_the_mean_pixel(digits):
    x, y = digits
    out, _ = Augment(parse_pipeline(["cutout-3"]), 10, seed=0, mean_pixel=torch.tensor([77.0])).pixels(x, y, 0)
    changed = out != x.float()
    assert changed.any() and bool((out[changed] == 77.0).all())
    assert int((out == 77.0).flatten(1).sum(1).max()) <= 9  # at most a 3 x 3 square


def test_translate_moves_by_whole_pixels_without_blur(digits):
    x, y = digits
    out, _ = Augment(parse_pipeline(["translate-2"]), 10, seed=0, fill="wrap").pixels(x, y, 0)
    for i in range(len(x)):  # wrap makes each output a pure roll of its input
        assert any(torch.allclose(out[i], x[i].float().roll((dy, dx), (1, 2)), atol=1e-3)
                   for dx in range(-2, 3) for dy in range(-2, 3)), i


def test_preprocessing_follows_augmentation(digits):
    x, y = digits
    pre = lambda p: (p / 255 - 0.5) / 0.25
    aug = Augment(parse_pipeline(["rotate-10"]), 10, seed=0, preprocess=pre)
    inputs, _ = aug(x, y, step=4)
    pixels, _ = aug.pixels(x, y, step=4)
    assert torch.equal(inputs, pre(pixels))


@pytest.mark.parametrize("token,message", [
    ("spin-10", "unknown augmentation 'spin-10'"), ("rotate-0", "rotate-D: rotate by"),
    ("translate-1.5", "whole pixels"), ("flip-h-2", "takes no number"), ("mixup", "mixup-A"),
])
def test_bad_tokens_are_clear_errors(token, message):
    with pytest.raises(BabysitError, match=message):
        parse_op(token)


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(BabysitError, match=r"^unknown augmentation 'rotat-10'; choose one of translate, .* "
                                           r"\(`babysit augment list` explains each\); did you mean 'rotate'\?$"):
        parse_op("rotat-10")


def test_translate_then_flip_draws_in_registry_order_and_composes_shift_after_flip():
    """Pins the draw order (the step's seed draw, translate's shifts, then flip-h's coins, then cutout's
    centres) and the composition (the mirror is applied first, then the shift): with wrap fill every
    output is a roll of a possibly mirrored input."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 1, 5, 7), dtype=torch.uint8, generator=g)
    y = torch.arange(6)
    out, _ = Augment(parse_pipeline(["cutout-2", "flip-h", "translate-2"]), 10, seed=4, fill="wrap",
                     mean_pixel=torch.tensor([-1.0])).pixels(x, y, step=9)
    rng = np.random.default_rng([4, 9, 0xA06])
    rng.integers(2**62)
    shift, flip = rng.integers(-2, 3, (6, 2)), rng.random(6) < 0.5
    cy, cx = rng.integers(0, 5, 6), rng.integers(0, 7, 6)
    for i in range(6):
        img = x[i].float().flip(-1) if flip[i] else x[i].float()
        expected = img.roll((int(shift[i, 1]), int(shift[i, 0])), (1, 2))
        expected[:, max(cy[i] - 1, 0) : cy[i] + 1, max(cx[i] - 1, 0) : cx[i] + 1] = -1.0
        torch.testing.assert_close(out[i], expected, atol=1e-3, rtol=0)


def test_adding_an_augmentation_is_one_entry(monkeypatch):
    """A new photometric op needs only its registry entry: the parser, the stage order and the runner follow."""
    entry = OpInfo(lambda x, args, d: 255 - x, "photometric", (0, 0), "invert: 255 - pixel (takes no number)")
    monkeypatch.setitem(AUGMENTATIONS._entries, "invert", entry)
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    out, _ = Augment(parse_pipeline(["invert"]), 10).pixels(x, torch.zeros(3, dtype=torch.long), step=0)
    assert torch.equal(out, 255 - x.float())
    with pytest.raises(BabysitError, match="invert: 255 - pixel"):
        parse_op("invert-2")


def test_duplicates_and_mixing_with_a_hinge_loss_are_refused():
    with pytest.raises(BabysitError, match="listed twice"):
        parse_pipeline(["rotate-10", "rotate-5"])
    cfg = C.apply_overrides(C.RunConfig(), {"augment.pipeline": "mixup-0.2", "loss.name": "svm"})
    with pytest.raises(BabysitError, match="soft labels, which loss.name=svm cannot take"):
        check_augment(cfg)


def test_flip_warnings_follow_the_notes():
    ops = parse_pipeline(["flip-h", "flip-v"])
    assert len(augment_warnings(ops, "digits")) == 2 and len(augment_warnings(ops, "mnist")) == 2
    assert [w.split()[0] for w in augment_warnings(ops, "fashion-mnist")] == ["flip-v"]  # mirrored clothes are fine
    assert augment_warnings(ops, "/data/cats-vs-dogs") == []
    assert augment_warnings(ops, "my-digits") == []  # a folder's traits are unknown: its name is not read


def test_warnings_read_the_data_sets_traits():
    ops = parse_pipeline(["flip-h", "flip-v", "rotate-40"])
    assert augment_warnings(ops, "letters", traits=Traits(mirror_safe=True, upright_only=False)) == []
    said = augment_warnings(ops, "letters", traits=Traits(mirror_safe=False, max_rotation=20))
    assert said == ["flip-h on letters: a mirrored image can show another class; drop flip-h and use translate or "
                    "rotate instead.",
                    "rotate-40 on letters: turns beyond ~20 degrees can change the class; use rotate-10."]
    assert augment_warnings(ops, "digits")[2] == ("rotate-40 on digits: turns beyond ~30 degrees confuse 6 and 9; "
                                                  "use rotate-15.")


def test_geometry_on_whole_image_whitening_is_warned_about():
    ops = parse_pipeline(["translate-1", "noise-0.05"])
    assert "translate-1 with data.preprocess=zca" in augment_warnings(ops, "digits", "zca")[0]
    assert augment_warnings(ops, "digits", "patch-white") == []
    assert augment_warnings(parse_pipeline(["noise-0.05"]), "digits", "zca") == []


def test_make_augment_is_none_without_a_pipeline(digits):
    x, _ = digits
    assert make_augment(C.RunConfig(), 10, x, None) is None
    cfg = C.apply_overrides(C.RunConfig(), {"augment.pipeline": "cutout-2,translate-1", "augment.fill": "reflect"})
    aug = make_augment(cfg, 10, x, None)
    assert aug is not None and aug.fill == "reflect"
    assert aug.mean_pixel is not None and aug.mean_pixel.item() == pytest.approx(x.float().mean().item(), rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c=st.sampled_from([1, 3]), h=st.integers(3, 20), w=st.integers(3, 20),
       tokens=st.lists(st.sampled_from(EXAMPLES), min_size=1, max_size=4, unique=True),
       fill=st.sampled_from(list(NUMPY_PAD)), step=st.integers(0, 10**6))
def test_property_any_pipeline_on_any_shape(n, c, h, w, tokens, fill, step):
    g = torch.Generator().manual_seed(step)
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    tokens = [t for t in tokens if not t.startswith("crop") or min(h, w) > 6] or ["flip-h"]
    aug = Augment(parse_pipeline(tokens), 10, seed=1, fill=fill)
    out, t = aug.pixels(x, y, step)
    assert out.shape == x.shape and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert float(out.min()) >= -1e-3 and float(out.max()) <= 255 + 1e-3
    if aug.mixes:
        assert t.shape == (n, 10) and torch.allclose(t.sum(1), torch.ones(n), atol=1e-6)
    else:
        assert torch.equal(t, y)
    assert torch.equal(out, aug.pixels(x, y, step)[0])


@pytest.mark.parametrize("mode,torch_padding", [("constant", "zeros"), ("edge", "border"), ("reflect", "reflection")])
def test_warp_matches_torch_and_kornia_where_they_have_the_fill_mode(mode, torch_padding):
    """Rotation + zoom + shear + shift through warp() equals torch's affine_grid + grid_sample (align_corners=True,
    normalised x_n = 2x/(W-1) - 1) and, for zero fill, kornia's warp_affine with the same pixel matrix."""
    from kornia.geometry.transform import warp_affine

    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 2, 9, 11, generator=g) * 255
    h, w = 9, 11
    m = compose([shift_matrix(torch.tensor([[1.5, -2.0], [0, 0], [3, 1], [-0.25, 0.5]])),
                 rotation_matrix(h, w, torch.tensor([17.0, -40.0, 5.0, 90.0])),
                 scale_matrix(h, w, torch.tensor([1.1, 0.8, 1.0, 1.3])),
                 shear_matrix(h, w, torch.tensor([0.0, 10.0, -20.0, 5.0]))], 4)
    ours = warp(x, m, mode, fill_value=0.0)
    to_norm = torch.tensor([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]])
    theta = to_norm @ torch.linalg.inv(m) @ torch.linalg.inv(to_norm)  # output (normalised) -> source (normalised)
    grid = torch.nn.functional.affine_grid(theta[:, :2], list(x.shape), align_corners=True)
    reference = torch.nn.functional.grid_sample(x, grid, padding_mode=torch_padding, align_corners=True)
    assert torch.allclose(ours, reference, atol=1e-3), (ours - reference).abs().max()
    if mode == "constant":
        assert torch.allclose(ours, warp_affine(x, m[:, :2], (h, w), align_corners=True), atol=1e-3)
