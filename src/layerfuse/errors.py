"""User-facing errors.

Anything the user can fix (a bad file, an unknown model, a missing package) raises
:class:`LayerfuseError` with a message that names the file, line or field and says what to do.
The CLI prints the message on one line and exits with code 2, without a traceback.
"""

from __future__ import annotations


class LayerfuseError(Exception):
    """An error caused by input the user can correct."""

    exit_code = 2
