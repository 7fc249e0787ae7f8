"""The version lives in one place (cyconv/_version.py): the installed
distribution's metadata and cyconv.__version__ agree."""
from importlib import metadata

import cyconv


def test_version_matches_distribution_metadata():
    assert metadata.version("cyconv") == cyconv.__version__


def test_version_is_pep440():
    from packaging.version import Version

    assert str(Version(cyconv.__version__)) == cyconv.__version__


def test_oldest_dependency_pins_match_the_declared_lower_bounds():
    """CI's last phase installs the wheel with .ci/oldest-deps.txt's exact pins.
    For every Python the package admits, each runtime dependency has one pin,
    never below the lower bound in the package metadata, and for the oldest
    Python exactly that bound (so the bound is what CI tests)."""
    import pytest
    from pathlib import Path
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    pins_file = Path(__file__).resolve().parents[1] / ".ci" / "oldest-deps.txt"
    if not pins_file.is_file():
        pytest.skip("not run from a source checkout (no .ci/oldest-deps.txt)")
    lower = {}
    for line in metadata.requires("cyconv"):
        req = Requirement(line)
        if req.marker is None:   # the extras' requirements carry 'extra == ...'
            (spec,) = req.specifier
            assert spec.operator == ">=", line
            lower[req.name] = Version(spec.version)
    assert set(lower) == {"numpy", "scipy", "threadpoolctl"}
    pins = [Requirement(line) for line in pins_file.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]

    requires_python = SpecifierSet(metadata.metadata("cyconv")["Requires-Python"])
    pythons = [f"3.{minor}" for minor in range(8, 16) if f"3.{minor}" in requires_python]
    assert pythons[0] == "3.10"
    for python in pythons:
        env = {"python_version": python, "python_full_version": python + ".0"}
        chosen = {}
        for pin in pins:
            if pin.marker is None or Marker(str(pin.marker)).evaluate(env):
                assert pin.name not in chosen, f"two pins of {pin.name} for Python {python}"
                (spec,) = pin.specifier
                assert spec.operator == "==", str(pin)
                chosen[pin.name] = Version(spec.version)
        assert set(chosen) == set(lower), python
        for name, version in chosen.items():
            assert version >= lower[name], (python, name)
            if python == pythons[0]:
                assert version == lower[name], (python, name)
