"""cyconv's benchmark: ``python -m cyconv.bench`` (see ``--help``)."""
