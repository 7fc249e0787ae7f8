"""cyconv.nn: build and train a ConvNet in plain NumPy on cyconv's ops.

Layers, losses and optimisers follow PyTorch's names and semantics, so a
PyTorch ``state_dict`` converted to NumPy loads unchanged.
"""
from .layers import *  # noqa: F403
from .layers import __all__ as _layers
from .losses import MulticlassHinge, SoftmaxCrossEntropy
from .module import Module, Parameter, Sequential, seed
from .optim import SGD, Adam

__all__ = ["Module", "Parameter", "Sequential", "seed", "SoftmaxCrossEntropy",
           "MulticlassHinge", "SGD", "Adam", *_layers]
