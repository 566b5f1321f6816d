"""kNN on the full MNIST (60,000 training x 10,000 test images): babysit's blocked torch distances vs
scikit-learn's KNeighborsClassifier, same k, same distance, same pixels, in one run.

Both classify the official test split with the official training split (no validation hold-out), pixels
scaled to 0..1 as float32. scikit-learn runs brute force (its default on 784-dimensional data: a chunked
distance matrix too) with every thread this process may use (threadpoolctl), torch with the same number.
The rounds alternate (ours, sklearn, ours, ...) so load drift hits both; prints each time, the median
ratio, both accuracies and how many test images the two label differently (ties: babysit gives a tied vote
to the nearest tied label, scikit-learn to the smallest).

    python bench/knn.py [--data mnist] [--k 3] [--distance l2] [--limit 0] [--rounds 1] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from babysit.baseline.knn import nearest, vote
from babysit.data.sources import load_dataset

# babysit.start (cpu_threads, resolve_device) is not imported: it pulls in kornia and tomli-w, which a bare
# machine with torch and scikit-learn may lack; the two lines below do the same here.


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--distance", default="l2", choices=("l1", "l2"))
    ap.add_argument("--limit", type=int, default=0, help="use the first N training images (0 = all)")
    ap.add_argument("--test-limit", type=int, default=0, help="use the first N test images (0 = all)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="0: every core this process may use")
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--device", default="cpu", help="where babysit's side runs (cpu, cuda); sklearn is CPU only")
    args = ap.parse_args()

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    ds = load_dataset(args.data)
    assert ds.test is not None, "needs a data set with an official test split"
    n, m = args.limit or len(ds.train), args.test_limit or len(ds.test)
    x_tr = (ds.train.x[:n].flatten(1).float() / 255).contiguous()
    x_te = (ds.test.x[:m].flatten(1).float() / 255).contiguous()
    y_tr, y_te = ds.train.y[:n], ds.test.y[:m]
    metric = {"l1": "manhattan", "l2": "euclidean"}[args.distance]
    load = os.getloadavg()
    print(f"{args.data}: {n} training x {m} test images, k={args.k}, {args.distance}, {threads} threads, "
          f"babysit on {device}, load average {load[0]:.2f} at the start")

    ours_times, theirs_times = [], []
    ours = theirs = None
    for r in range(args.rounds):
        xt, xe, yt = x_tr.to(device), x_te.to(device), y_tr.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        _, index = nearest(xe, xt, args.k, args.distance, args.chunk_size)
        neighbours = yt[index]
        ours = vote(neighbours, 10).cpu()  # what babysit.baseline.knn.predict does
        ours_times.append(time.perf_counter() - t)  # .cpu() waited for the device
        with threadpool_limits(threads):
            t = time.perf_counter()
            knn = KNeighborsClassifier(n_neighbors=args.k, metric=metric, algorithm="brute", n_jobs=threads)
            theirs = torch.from_numpy(knn.fit(x_tr.numpy(), y_tr.numpy()).predict(x_te.numpy()))
            theirs_times.append(time.perf_counter() - t)
        print(f"round {r + 1}: babysit {ours_times[-1]:.2f} s, scikit-learn {theirs_times[-1]:.2f} s")
    assert ours is not None and theirs is not None
    a_ours, a_theirs = (ours == y_te).float().mean().item(), (theirs == y_te).float().mean().item()
    t_ours, t_theirs = statistics.median(ours_times), statistics.median(theirs_times)
    print(f"{'':14}{'seconds':>10}{'test acc':>10}{'error %':>9}")
    print(f"{'babysit':14}{t_ours:10.2f}{a_ours:10.4f}{100 * (1 - a_ours):9.2f}")
    print(f"{'scikit-learn':14}{t_theirs:10.2f}{a_theirs:10.4f}{100 * (1 - a_theirs):9.2f}")
    counts = torch.zeros(m, 10, dtype=torch.long).scatter_add_(1, neighbours.cpu(), torch.ones_like(neighbours.cpu()))
    tied = (counts == counts.max(1, keepdim=True).values).sum(1) > 1  # a vote two or more labels share
    smallest = counts.argmax(1)  # the same neighbours, a tie to the smallest label: scikit-learn's rule
    a_small = (smallest == y_te).float().mean().item()
    print(f"{'babysit, ties to the smallest label':14}{'':>2}{a_small:10.4f}{100 * (1 - a_small):9.2f}"
          f"   (labels {int((smallest != theirs).sum())} test images unlike scikit-learn)")
    differ = ours != theirs
    print(f"scikit-learn / babysit time: {t_theirs / t_ours:.2f}x; the two label {int(differ.sum())} of {m} test "
          f"images differently, {int((differ & tied).sum())} of them at a tied vote (the tie rules differ); "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    assert int((differ & ~tied).sum()) <= max(1, m // 1000), "outside ties the two classifiers must agree"


if __name__ == "__main__":
    main()
