"""Train a small ConvNet on scikit-learn's 8x8 handwritten digits, in NumPy.

    python -m cyconv.examples.digits [--epochs 20] [--seed 0]

INPUT 1x8x8 -> CONV 3x3 (16) -> RELU -> POOL 2 -> CONV 3x3 (32) -> RELU ->
POOL 2 -> FC 10, with a softmax loss and Adam.  The digits ship inside
scikit-learn (``pip install scikit-learn``, or the ``[examples]`` extra):
nothing is downloaded.  The model is saved with ``Module.save`` and reloaded
to show the same test accuracy.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from cyconv import nn


def load_data(seed, test_fraction=0.25):
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - exercised by hand
        raise SystemExit("this example needs scikit-learn: pip install scikit-learn "
                         "(or the cyconv[examples] extra)")
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8), 0..1
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def accuracy(model, x, y, batch=256):
    model.eval()
    hits = sum(int((model(x[i:i + batch]).argmax(axis=1) == y[i:i + batch]).sum())
               for i in range(0, len(y), batch))
    model.train()
    return hits / len(y)


def train(epochs=20, seed=0, batch=32, lr=3e-3, log=print):
    """Train and return (model, test accuracy)."""
    nn.seed(seed)
    xtr, ytr, xte, yte = load_data(seed)
    model = build_model()
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = nn.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(len(ytr))
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            model.backward(loss_fn.backward())
            opt.step()
            total += loss * len(idx)
        rate = len(ytr) / (time.perf_counter() - t0)
        log(f"epoch {epoch:2d}/{epochs}  loss {total / len(ytr):.4f}  train "
            f"{accuracy(model, xtr, ytr):.3f}  test {accuracy(model, xte, yte):.3f}  "
            f"{rate:,.0f} images/s")
    return model, accuracy(model, xte, yte), (xte, yte)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m cyconv.examples.digits",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model, acc, (xte, yte) = train(args.epochs, args.seed)
    print(f"final test accuracy: {acc:.4f} ({len(yte)} held-out images, "
          f"{time.perf_counter() - t0:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits.npz")
        model.save(path)
        reloaded = build_model().load(path)
        print(f"saved to and reloaded from {os.path.basename(path)}: test accuracy "
              f"{accuracy(reloaded, xte, yte):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
