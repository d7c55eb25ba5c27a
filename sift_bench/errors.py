"""The one exception users see: the CLI turns it into a red message and exit code, never a traceback."""


class SiftBenchError(Exception):
    """A user-facing error: bad input, missing data, an impossible budget. The message names the fix."""
