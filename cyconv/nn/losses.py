"""Losses on class scores: softmax cross-entropy and the multiclass SVM loss."""
import numpy as np

__all__ = ["SoftmaxCrossEntropy", "MulticlassHinge"]


def _check(name, scores, labels):
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"{name}: scores must be (N, classes), got shape {scores.shape}")
    if labels.shape != (scores.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be {scores.shape[0]} integer class indices, "
                         f"got shape {labels.shape} dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"{name}: labels must lie in [0, {scores.shape[1]}), got "
                         f"{labels.min()}..{labels.max()}")
    return scores, labels


class SoftmaxCrossEntropy:
    """Mean over the batch of -log softmax(scores)[label] (numerically stable).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import nn
    >>> loss = nn.SoftmaxCrossEntropy()
    >>> round(loss.forward(np.zeros((2, 4)), np.array([0, 3])), 4)
    1.3863
    >>> loss.backward().shape
    (2, 4)
    """

    def forward(self, scores, labels):
        scores, labels = _check("SoftmaxCrossEntropy", scores, labels)
        shifted = scores - scores.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._p = np.exp(logp)
        self._labels = labels
        n = scores.shape[0]
        return float(-logp[np.arange(n), labels].mean())

    __call__ = forward

    def backward(self):
        g = self._p.copy()
        n = g.shape[0]
        g[np.arange(n), self._labels] -= 1
        return g / n


class MulticlassHinge:
    """The multiclass SVM loss: mean over the batch of
    sum_{j != y} max(0, s_j - s_y + margin).

    (PyTorch's MultiMarginLoss additionally divides by the number of classes.)

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import nn
    >>> round(nn.MulticlassHinge().forward(np.array([[3.2, 5.1, -1.7]]), np.array([0])), 4)
    2.9
    """

    def __init__(self, margin=1.0):
        self.margin = margin

    def forward(self, scores, labels):
        scores, labels = _check("MulticlassHinge", scores, labels)
        n = scores.shape[0]
        correct = scores[np.arange(n), labels][:, None]
        margins = np.maximum(0, scores - correct + self.margin)
        margins[np.arange(n), labels] = 0
        self._active = (margins > 0).astype(scores.dtype)
        self._labels = labels
        return float(margins.sum() / n)

    __call__ = forward

    def backward(self):
        g = self._active.copy()
        n = g.shape[0]
        g[np.arange(n), self._labels] = -self._active.sum(axis=1)
        return g / n
