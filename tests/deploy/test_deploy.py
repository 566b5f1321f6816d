"""A trained digits run used from its directory alone: predict on PNG files written from the test images
(agreeing with `babysit eval`), the API on raw arrays, export to ONNX / TorchScript checked with onnxruntime,
convert --fully-conv, and every hostile input as one sentence with exit code 2."""

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

import babysit
from babysit import config as C
from babysit.data.folders import convert_array
from babysit.data.preprocess import KINDS, Preprocessor
from babysit.data.sources import load_dataset
from babysit.deploy.export import PixelPreprocess, export_run
from babysit.deploy.load import load_model
from babysit.deploy.predict import predict
from babysit.ensemble import ensemble
from babysit.errors import BabysitError
from babysit.experiment import evaluate_run
from babysit.models.fold import count_bn
from babysit.review.metrics import per_class
from babysit.start import load_run
from babysit.train.tta import tta_probabilities, tta_views
from tests.monitor.conftest import run_main

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = ["--data.name=digits", "--train.epochs=2", "--train.batch_size=32", "--train.threads=1",
        "--train.progress=false", "--monitor.checks=false", "--monitor.report=false", "--monitor.stats_every=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A BN conv run (channel-mean-std) and a pca fc run, and the test split's images as class-folder PNGs."""
    out = tmp_path_factory.mktemp("deploy")
    code, _, err = run_main(["train", *TINY, "--model.spec=conv3-8 bn relu pool2 fc-32 bn relu fc",
                             "--data.preprocess=channel-mean-std", "--out", str(out), "--name", "bn"])
    assert code == 0, err
    code, _, err = run_main(["train", *TINY, "--model.spec=fc-32 relu fc", "--data.preprocess=pca",
                             "--data.limit=500", "--out", str(out), "--name", "pca"])
    assert code == 0, err
    _, _, _, _, splits = load_run(out / "bn")
    pngs = out / "pngs"
    for i, (x, y) in enumerate(zip(splits.test.x.numpy(), splits.test.y.tolist())):
        (pngs / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[0]).save(pngs / str(y) / f"{i:04d}.png")  # digits are 0..255 uint8 (round(v*255/16))
    return out, splits


def test_predict_on_png_files_agrees_with_eval_on_the_same_images(trained):
    out, splits = trained
    pred = predict(out / "bn", out / "pngs")
    res = evaluate_run(out / "bn", "test")
    assert len(pred.names) == len(splits.test) == int(res.confusion.sum())
    assert pred.accuracy == pytest.approx(res.accuracy)
    k = len(pred.classes)
    confusion = np.bincount(pred.labels * k + pred.predicted, minlength=k * k).reshape(k, k)
    np.testing.assert_array_equal(confusion, res.confusion.numpy())  # image for image, the same predictions
    code, stdout, _ = run_main(["predict", str(out / "bn"), str(out / "pngs"), "--top", "3"])
    assert code == 0 and f"accuracy {res.accuracy:.4f}" in stdout
    first = stdout.splitlines()[0]
    assert first.startswith(pred.names[0]) and "top-3: " in first


def test_the_api_takes_raw_arrays_in_every_layout_and_matches_the_run_model(trained):
    out, splits = trained
    _, _, model, pre, _ = load_run(out / "bn")
    x = splits.test.x[:50]
    with torch.no_grad():
        expected = model.eval()(pre(x)).softmax(1)
    clf = babysit.load_model(out / "bn")
    hw = x[:, 0].numpy()  # (N, H, W) uint8
    for images in (hw, hw[..., None], torch.from_numpy(hw), hw.astype(np.float32), np.repeat(hw[..., None], 3, 3)):
        torch.testing.assert_close(clf(images), expected, atol=1e-6, rtol=0)
    assert babysit.predict(out / "bn", hw).top(2)[0][0][0] == clf.classes[int(expected[0].argmax())]


def test_a_run_with_data_size_resizes_new_images_as_it_resized_its_data(trained, tmp_path):
    out, splits = trained
    sized = tmp_path / "sized"
    shutil.copytree(out / "bn", sized)
    cfg = C.load_toml(sized / "config.toml")
    (sized / "config.toml").write_text(C.dumps_toml(C.apply_overrides(cfg, {"data.size": "8"})))
    big = np.stack([np.asarray(Image.fromarray(im[0]).resize((16, 16))) for im in splits.test.x[:20].numpy()])
    clf = load_model(sized)
    _, _, model, pre, _ = load_run(out / "bn")
    with torch.no_grad():
        expected = model.eval()(pre(torch.from_numpy(convert_array(big[:, None], 1, 8)))).softmax(1)
    torch.testing.assert_close(clf(big), expected, atol=1e-6, rtol=0)


def test_npz_input_csv_output_and_an_ensemble_directory(trained, tmp_path):
    out, splits = trained
    x, y = splits.test.x[:30].numpy(), splits.test.y[:30].numpy()
    np.savez(tmp_path / "few.npz", x=x[:, 0], y=y)
    code, stdout, err = run_main(["predict", str(out / "bn"), str(tmp_path / "few.npz"), "--csv",
                                  str(tmp_path / "p.csv"), "--top", "2"])
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    pred = predict(out / "bn", tmp_path / "few.npz")
    assert [r["predicted"] for r in rows] == [pred.classes[i] for i in pred.predicted]
    assert [r["true"] for r in rows] == [str(v) for v in y] and float(rows[0]["p1"]) == pytest.approx(
        pred.probabilities[0].max(), abs=1e-6)
    _, _, model, pre, _ = load_run(out / "bn")
    views = tta_views("flip,translate", C.load_toml(out / "bn" / "config.toml"), 10)
    np.testing.assert_allclose(predict(out / "bn", tmp_path / "few.npz", tta="flip,translate").probabilities,
                               tta_probabilities(model, pre, torch.from_numpy(x), views).numpy(), atol=1e-6)
    ens = ensemble([out / "bn", out / "bn"], out=tmp_path, name="twice")
    np.testing.assert_allclose(predict(ens.path, tmp_path / "few.npz").probabilities, pred.probabilities, atol=1e-6)


def test_pixel_preprocess_is_the_preprocessor_for_every_kind():
    x = torch.as_tensor(np.asarray(load_dataset("digits").train.x[:300]))
    for kind in KINDS.names():
        pre = Preprocessor.fit(x, kind, components=20)
        torch.testing.assert_close(PixelPreprocess(pre, (1, 8, 8))(x.float()), pre(x), atol=1e-5, rtol=1e-5)


def test_onnx_export_takes_raw_pixels_and_matches_torch_with_onnxruntime(trained, tmp_path):
    import onnxruntime

    out, splits = trained
    code, stdout, err = run_main(["export", str(out / "bn"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert code == 0, err
    assert "2 batch-norm layer(s) folded" in stdout and "over 359 test images of digits" in stdout
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    pngs = sorted((out / "pngs").rglob("*.png"))[:100]  # real images read back from files, raw 0..255
    pixels = np.stack([np.asarray(Image.open(p))[None] for p in pngs]).astype(np.float32)
    got = session.run(["probabilities"], {"pixels": pixels})[0]
    want = predict(out / "bn", [str(p) for p in pngs]).probabilities
    diff = np.abs(got - want).max()
    print(f"onnxruntime vs torch on {len(pngs)} digits test PNGs: max |difference| {diff:.2e}")
    assert diff <= 1e-4


def test_torchscript_export_of_a_pca_run_folds_the_projection_into_the_graph(trained, tmp_path):
    out, _ = trained
    res = export_run(out / "pca", "torchscript", tmp_path / "m.pt")
    assert res.max_abs_diff <= 1e-4 and res.images > 0
    with pytest.warns(DeprecationWarning):  # TorchScript is deprecated in torch 2.13; the file still loads
        net = torch.jit.load(str(tmp_path / "m.pt"))
    x = np.asarray(load_dataset("digits").train.x[:10])
    torch.testing.assert_close(net(torch.from_numpy(x).float()), load_model(out / "pca")(x[:, 0]), atol=1e-5, rtol=0)


def test_missing_onnx_packages_say_how_to_install(trained, monkeypatch):
    out, _ = trained
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(BabysitError, match=r"pip install 'babysit\[export\]'"):
        export_run(out / "bn", "onnx")


def test_convert_writes_a_run_that_scores_the_same(trained, tmp_path):
    out, _ = trained
    code, stdout, err = run_main(["convert", str(out / "bn"), "--fully-conv", "--out", str(tmp_path / "fc")])
    assert code == 0, err
    assert "conv3-8 bn relu pool2 conv4-32-p0 bn relu conv1-10" in stdout and "total stride 2" in stdout
    a, b = evaluate_run(out / "bn"), evaluate_run(tmp_path / "fc")
    assert b.accuracy == a.accuracy and torch.equal(a.confusion, b.confusion)
    folded = babysit.fold_bn(load_model(tmp_path / "fc").members[0].model)
    assert count_bn(folded) == 0


def test_eval_top5_and_per_class_scores_against_sklearn(trained):
    out, splits = trained
    res = evaluate_run(out / "bn", "test")
    _, _, model, pre, _ = load_run(out / "bn")
    with torch.no_grad():
        scores = model.eval()(pre(splits.test.x))
    y = splits.test.y
    top5 = np.mean([int(y[i]) in scores[i].argsort(descending=True)[:5].tolist() for i in range(len(y))])
    assert res.top5 == pytest.approx(top5)
    pred = scores.argmax(1).numpy()
    p, r, f, n = precision_recall_fscore_support(y.numpy(), pred, labels=list(range(10)), zero_division=0)
    m = per_class(res.confusion)
    np.testing.assert_allclose(m.precision, p)
    np.testing.assert_allclose(m.recall, r)
    np.testing.assert_allclose(m.f1, f)
    np.testing.assert_array_equal(m.support, n)
    code, stdout, _ = run_main(["eval", str(out / "bn")])
    assert code == 0 and f"top-5 accuracy {top5:.4f}" in stdout and "macro avg" in stdout


def test_hostile_inputs_are_one_sentence_and_exit_2(trained, tmp_path):
    out, _ = trained
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "wide.png")
    ens = ensemble([out / "bn", out / "bn"], out=tmp_path, name="ens")
    cases = [
        (["predict", str(out / "bn"), str(tmp_path / "bad.png")], "cannot be decoded"),
        (["predict", str(tmp_path / "nowhere"), str(tmp_path / "wide.png")], "does not exist"),
        (["predict", str(out / "bn"), str(tmp_path / "wide.png")], "resize the image to 8x8"),
        (["predict", str(out / "bn"), str(tmp_path / "missing.png")], "does not exist"),
        (["export", str(ens.path)], "ensemble directory"),
        (["convert", str(ens.path), "--fully-conv"], "ensemble directory"),
        (["convert", str(out / "pca"), "--fully-conv"], "no image to slide over"),
        (["export", str(out / "bn"), "--format", "tflite"], "unknown export format"),
        (["convert", str(out / "bn")], "--fully-conv"),
        (["predict", str(out / "bn"), str(tmp_path / "wide.png"), "--top", "0"], "--top 0"),
    ]
    for args, words in cases:
        code, stdout, err = run_main(args)
        assert code == 2 and words in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
