"""Argument checks: the one definition of each, whatever package raises the error."""


def is_positive_int(value):
    """True for an `int` (not a `bool`) of at least 1: the one test behind every
    positive-integer argument check."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_positive_int(name, value, allow_none=False):
    """Raise `ValueError` naming `name` unless `value` is a positive integer (or `None`, where
    `allow_none`): "`name` must be a positive integer, got name=value."."""
    if value is None and allow_none:
        return
    if not is_positive_int(value):
        raise ValueError(f"`{name}` must be a positive integer, got {name}={value!r}.")
