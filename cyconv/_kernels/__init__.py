"""Compiled kernels (Cython + OpenMP).  Private: call the public ops instead."""
