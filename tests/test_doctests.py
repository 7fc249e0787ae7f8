"""The Examples sections of cyconv's docstrings run and print what they show.

Only the Python modules are imported: an instruction-set variant of the
kernels must never be imported on a CPU without its instructions."""
import doctest
import importlib
import pkgutil

import pytest

import cyconv


def _python_modules():
    names = []
    for info in pkgutil.walk_packages(cyconv.__path__, "cyconv.",
                                      onerror=lambda name: None):
        spec = info.module_finder.find_spec(info.name)
        if spec is None or not (spec.origin or "").endswith(".py"):
            continue   # compiled kernels
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue   # command-line entry points
        names.append(info.name)
    return sorted(names)


MODULES = _python_modules()


def test_the_python_modules_are_found():
    assert {"cyconv.conv", "cyconv.signal", "cyconv.nn.layers", "cyconv.shapes"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as e:   # an optional dependency (cyconv.dask without Dask)
        pytest.skip(f"{name}: {e}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
