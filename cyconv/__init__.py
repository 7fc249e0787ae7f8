"""cyconv: exact, multithreaded CPU convolutions for NumPy.

Cython kernels with OpenMP implement convolution, im2col and col2im; see
``python -m cyconv info`` for this build's configuration.
"""
from ._config import show_config
from ._threads import get_num_threads, num_threads, set_num_threads
from ._version import __version__
from .conv import *  # noqa: F403  (conv1d-3d, conv_transpose1d-3d and backward)
from .conv import __all__ as _conv_all
from .patches import col2im, im2col
from .pool import *  # noqa: F403  (max/avg/lp/adaptive pooling, 1-D to 3-D)
from .pool import __all__ as _pool_all
from .shapes import conv_output_shape, explain_conv, receptive_field
from .local import locally_connected2d, locally_connected2d_backward
from .matrix import conv2d_matrix
from . import signal

__all__ = [
    "__version__",
    "show_config",
    "get_num_threads",
    "set_num_threads",
    "num_threads",
    *_conv_all,
    "im2col",
    "col2im",
    *_pool_all,
    "conv_output_shape",
    "explain_conv",
    "receptive_field",
    "locally_connected2d",
    "locally_connected2d_backward",
    "conv2d_matrix",
    "signal",
]
