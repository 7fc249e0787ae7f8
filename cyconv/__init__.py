"""cyconv: exact, multithreaded CPU convolutions for NumPy.

Cython kernels with OpenMP implement convolution, im2col and col2im; see
``python -m cyconv info`` for this build's configuration.
"""
from ._config import show_config
from ._threads import get_num_threads, num_threads, set_num_threads
from ._version import __version__
from .conv import ConvGrads, conv2d, conv2d_backward
from .patches import col2im, im2col

__all__ = [
    "__version__",
    "show_config",
    "get_num_threads",
    "set_num_threads",
    "num_threads",
    "ConvGrads",
    "conv2d",
    "conv2d_backward",
    "im2col",
    "col2im",
]
