"""The version lives in one place (cyconv/_version.py): the installed
distribution's metadata and cyconv.__version__ agree."""
from importlib import metadata

import cyconv


def test_version_matches_distribution_metadata():
    assert metadata.version("cyconv") == cyconv.__version__


def test_version_is_pep440():
    from packaging.version import Version

    assert str(Version(cyconv.__version__)) == cyconv.__version__
