"""kNN: the distances against scipy's cdist and the equations, blocks against one matrix, the vote and its tie
rule, cross-validation against scikit-learn, memory bounded by the block size, the progress bar."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from babysit.baseline.knn import DISTANCES, CVTable, cross_validate, distance_blocks, nearest, predict, vote


def pixels(part) -> torch.Tensor:
    return part.x.flatten(1).double()


@pytest.mark.parametrize("name,scipy_name", [("l1", "cityblock"), ("l2", "euclidean")])
def test_distances_match_scipy_cdist_and_the_equation(digits, name, scipy_name):
    a, b = pixels(digits.test)[:50], pixels(digits.train)
    got = DISTANCES[name](a, b)
    np.testing.assert_allclose(got.numpy(), cdist(a.numpy(), b.numpy(), scipy_name), rtol=1e-9, atol=1e-9)
    diff = a[:, None, :] - b[None, :, :]  # the notes: d1 = sum_p |I1_p - I2_p|, d2 = sqrt(sum_p (I1_p - I2_p)^2)
    written = diff.abs().sum(2) if name == "l1" else diff.pow(2).sum(2).sqrt()
    torch.testing.assert_close(got, written)
    got32 = DISTANCES[name](a.float(), b.float())  # what runs use: float32, the L2 expansion rounds a little
    np.testing.assert_allclose(got32.numpy(), written.numpy(), rtol=1e-5, atol=1e-3)
    assert got[:, :1].min() > 0 and DISTANCES[name](a, a).diagonal().abs().max() < 1e-6


def test_blocks_are_the_matrix_in_pieces_of_at_most_chunk_size_rows(digits):
    a, b = pixels(digits.val), pixels(digits.train)
    blocks = list(distance_blocks(a, b, "l2", chunk_size=37))
    assert [s for s, _ in blocks] == list(range(0, len(a), 37))
    assert all(len(block) <= 37 and block.shape[1] == len(b) for _, block in blocks)
    torch.testing.assert_close(torch.cat([block for _, block in blocks]), DISTANCES["l2"](a, b))


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_chunked_nearest_equals_unchunked(digits, distance):
    a, b = pixels(digits.test), pixels(digits.train)
    d1, i1 = nearest(a, b, 7, distance, chunk_size=13)
    d2, i2 = nearest(a, b, 7, distance, chunk_size=100_000)
    torch.testing.assert_close(d1, d2)
    assert torch.equal(i1, i2)
    assert bool((d1[:, 1:] >= d1[:, :-1]).all())  # nearest first


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_k1_on_the_training_set_itself_is_100_percent(digits, distance):
    x, y = digits.train.x.flatten(1).float(), digits.train.y
    pred = predict(x, x, y, k=1, num_classes=10, distance=distance, chunk_size=200)
    assert (pred == y).float().mean().item() == 1.0  # each image is its own nearest neighbour (no duplicates)
    assert (predict(x, x, y, k=5, num_classes=10, distance=distance) == y).float().mean().item() < 1.0


def reference_vote(row: list[int]) -> int:
    """The tie rule written out: most votes; among tied labels, the one met first walking out from the query."""
    counts = {label: row.count(label) for label in row}
    top = max(counts.values())
    return next(label for label in row if counts[label] == top)


def test_vote_majority_and_tie_rule():
    labels = torch.tensor([[1, 2, 2], [2, 1, 1], [3, 0, 0], [4, 5, 6], [0, 9, 9]])
    assert vote(labels, 10).tolist() == [2, 1, 0, 4, 9]  # the majority; 1-1-1: the nearest
    tied = torch.tensor([[2, 1, 1, 2], [3, 0, 0, 3], [5, 4, 6, 7], [9, 0, 9, 0]])
    assert vote(tied, 10).tolist() == [2, 3, 5, 9]  # 2-2 ties: the label of the nearest neighbour wins
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 4, (500, 6), generator=g)
    assert vote(rows, 4).tolist() == [reference_vote(r) for r in rows.tolist()]


def test_cross_validation_matches_scikit_learn_for_k1(digits):
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x, y = digits.train.x.flatten(1).float()[:600], digits.train.y[:600]
    table = cross_validate(x, y, ks=(5, 1, 3), distances=("l1", "l2"), folds=4, num_classes=10, seed=3, chunk_size=64)
    assert table.ks == (1, 3, 5) and table.folds == 4 and table.acc["l2"].shape == (3, 4)
    split = StratifiedKFold(4, shuffle=True, random_state=3).split(np.zeros(600), y.numpy())
    for f, (tr, va) in enumerate(split):
        for name, metric in (("l1", "manhattan"), ("l2", "euclidean")):
            knn = KNeighborsClassifier(n_neighbors=1, metric=metric).fit(x[tr].numpy(), y[tr].numpy())
            assert table.acc[name][0, f] == pytest.approx(knn.score(x[va].numpy(), y[va].numpy()), abs=1e-6)
    assert 0.9 < table.mean("l2").max() <= 1.0
    rows = table.rows()
    assert len(rows) == 2 * 3 * 4 and rows[0] == {"distance": "l1", "k": 1, "fold": 1,
                                                    "accuracy": table.acc["l1"][0, 0]}
    assert "fold 4" in table.format() and table.format().count("\n") == 2 * (3 + 1) - 1


def test_the_best_setting_prefers_the_smaller_k_then_the_first_distance():
    acc = {"l1": np.array([[0.9, 0.9], [0.95, 0.95], [0.95, 0.95]]), "l2": np.array([[0.95, 0.95], [0.8, 0.8],
                                                                                       [0.7, 0.7]])}
    assert CVTable((1, 3, 5), acc).best() == ("l2", 1, pytest.approx(0.95))
    assert CVTable((1, 3, 5), {"l2": acc["l2"], "l1": acc["l1"]}).best()[:2] == ("l2", 1)
    assert CVTable((1, 3, 5), {"l1": acc["l1"]}).best()[:2] == ("l1", 3)


def test_progress_bar_counts_the_blocks(digits, capsys):
    a, b = pixels(digits.val), pixels(digits.train)
    nearest(a, b, 3, "l2", chunk_size=64, progress=True, desc="l2 test")
    err = capsys.readouterr().err
    blocks = -(-len(a) // 64)
    assert f"{blocks}/{blocks}" in err and "l2 test" in err and "block" in err


@pytest.mark.slow  # a fresh interpreter (seconds); the fast test above checks the block shapes
def test_memory_is_bounded_by_the_chunk_size():
    """10,000 queries against 10,000 training rows: the whole matrix would be 400 MB, a block of 200 rows 8 MB.
    Peak resident memory (a fresh interpreter) must grow by far less than the matrix."""
    code = textwrap.dedent("""
        import resource, torch
        from babysit.baseline.knn import nearest
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(0)
        a, b = torch.rand(10000, 8, generator=g), torch.rand(10000, 8, generator=g)
        nearest(a[:10], b, 5, "l2", chunk_size=200)  # warm up the kernels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        nearest(a, b, 5, "l2", chunk_size=CHUNK)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    res = subprocess.run([sys.executable, "-c", code.replace("CHUNK", "200")], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    grown = int(res.stdout.strip())
    assert grown < 80e6, f"peak memory grew by {grown / 1e6:.0f} MB; the full matrix is 400 MB"


@pytest.mark.slow  # MNIST: 10,000 training x 2,000 test images
def test_on_mnist_the_same_neighbours_as_scikit_learn():
    from sklearn.neighbors import KNeighborsClassifier

    from babysit.data.sources import load_dataset
    from babysit.errors import BabysitError

    try:
        ds = load_dataset("mnist")
    except BabysitError as e:
        pytest.skip(str(e))
    assert ds.test is not None
    x, y = ds.train.x[:10000].flatten(1).float() / 255, ds.train.y[:10000]
    xt, yt = ds.test.x[:2000].flatten(1).float() / 255, ds.test.y[:2000]
    _, index = nearest(xt, x, 3, "l2", chunk_size=300)
    theirs = KNeighborsClassifier(3, algorithm="brute").fit(x.numpy(), y.numpy())
    their_index = theirs.kneighbors(xt.numpy(), return_distance=False)
    assert (index.numpy() == their_index).all(1).mean() > 0.999  # float rounding may swap a near tie
    counts = torch.zeros(len(xt), 10, dtype=torch.long).scatter_add_(1, y[index], torch.ones_like(index))
    smallest = counts.argmax(1)  # scikit-learn's tie rule on our neighbours: its predictions
    assert (smallest.numpy() == theirs.predict(xt.numpy())).mean() > 0.999
    assert (vote(y[index], 10) == yt).float().mean().item() > 0.9  # 92.85 %: the first test images are the hard ones
