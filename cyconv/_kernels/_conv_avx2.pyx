# The kernels of _conv_impl.pxi compiled for AVX2 + FMA.
# setup.py gives each variant its compiler flags; cyconv._kernels picks one at import.
include "_conv_impl.pxi"
