# The kernels of _conv_impl.pxi compiled for AVX-512 (F, CD, VL, BW, DQ).
# setup.py gives each variant its compiler flags; cyconv._kernels picks one at import.
include "_conv_impl.pxi"
