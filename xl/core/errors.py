"""One exception type for every mistake a user can make, so the CLI can print it cleanly, and the
"did you mean" hint its messages share."""
import difflib


class XLError(Exception):
    """Bad input or missing data, with a message that says how to fix it."""


def did_you_mean(name, choices) -> str:
    """"did you mean 'x'? " for the choice closest to `name` (difflib), "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f"did you mean {close[0]!r}? " if close else ""
