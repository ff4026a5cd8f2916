"""The one exception type users see: a sentence naming the bad value and the fix."""


class KdedgeError(Exception):
    """A problem the user can fix. The CLI prints it as one line, with no traceback."""
