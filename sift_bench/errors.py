"""The one exception users see: the CLI turns it into a red message and exit code, never a traceback."""

from __future__ import annotations

from pydantic import ValidationError


class SiftBenchError(Exception):
    """A user-facing error: bad input, missing data, an impossible budget. The message names the fix."""


def validation_line(error: ValidationError) -> str:
    """A pydantic ValidationError as one line: `field.sub: message; other: message`."""
    return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'input'}: {err['msg']}" for err in error.errors())
