"""One exception type for every mistake a user can make, so the CLI can print it cleanly."""


class XLError(Exception):
    """Bad input or missing data, with a message that says how to fix it."""
