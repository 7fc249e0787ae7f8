# The kernels of _conv_impl.pxi compiled for the x86-64 baseline (or the platform's default) instruction set.
# setup.py gives each variant its compiler flags; cyconv._kernels picks one at import.
include "_conv_impl.pxi"
