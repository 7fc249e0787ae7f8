"""Optimisers updating Parameters in place, with PyTorch's update rules."""
import numbers

import numpy as np

__all__ = ["SGD", "Adam"]


def _at_least_zero(op, name, value):
    """value, checked as torch.optim checks its hyperparameters."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    if not value >= 0:
        raise ValueError(f"{op}: {name} must be >= 0, got {value!r}")
    return value


class _Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.lr = _at_least_zero(type(self).__name__, "lr", lr)

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, weight decay and Nesterov
    momentum, as ``torch.optim.SGD``.

    Examples
    --------
    >>> from cyconv import nn
    >>> layer = nn.Linear(3, 2)
    >>> opt = nn.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    """

    def __init__(self, params, lr, momentum=0, weight_decay=0, nesterov=False, dampening=0):
        super().__init__(params, lr)
        momentum = _at_least_zero("SGD", "momentum", momentum)
        weight_decay = _at_least_zero("SGD", "weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum, self.weight_decay = momentum, weight_decay
        self.nesterov, self.dampening = nesterov, dampening
        self._buf = [None] * len(self.params)

    def step(self):
        for i, p in enumerate(self.params):
            g = p.grad + self.weight_decay * p if self.weight_decay else p.grad.copy()
            if self.momentum:
                if self._buf[i] is None:
                    self._buf[i] = np.array(g, copy=True)
                else:
                    self._buf[i] = self.momentum * self._buf[i] + (1 - self.dampening) * g
                g = g + self.momentum * self._buf[i] if self.nesterov else self._buf[i]
            p -= (self.lr * g).astype(p.dtype)


class Adam(_Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 weight decay added to the gradient).

    Examples
    --------
    >>> from cyconv import nn
    >>> opt = nn.Adam(nn.Linear(3, 2).parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, lr)
        eps = _at_least_zero("Adam", "eps", eps)
        weight_decay = _at_least_zero("Adam", "weight_decay", weight_decay)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {betas!r}")
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self._m = [np.zeros_like(np.asarray(p)) for p in self.params]
        self._v = [np.zeros_like(np.asarray(p)) for p in self.params]
        self._t = 0

    def step(self):
        self._t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self._t, 1 - b2 ** self._t
        for p, m, v in zip(self.params, self._m, self._v):
            g = p.grad + self.weight_decay * p if self.weight_decay else p.grad
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denom = np.sqrt(v) / np.sqrt(c2) + self.eps
            p -= ((self.lr / c1) * m / denom).astype(p.dtype)
