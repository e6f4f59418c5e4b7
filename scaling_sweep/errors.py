"""The one exception type users see for bad input: a single line saying what is wrong and how to fix it."""


class ConfigError(ValueError):
    """Bad input caught before any job starts; str(err) is one line naming the value and what is allowed."""
