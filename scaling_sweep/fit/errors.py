"""The one exception the fitting package raises for bad input."""


class FitError(ValueError):
    """A table or option the fit cannot use; str(err) is one line: what is missing or wrong, and how to fix it."""
