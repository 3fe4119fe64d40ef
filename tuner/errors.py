"""User-facing errors: one line that names the problem and the fix (the CLI exits with 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix (bad argument, bad file, wrong URL). Printed without a
    traceback; the CLI exits with code 2."""


def unknown_choice(what: str, value: object, choices: Iterable[object]) -> str:
    """Message for a value that is not one of ``choices``, with a close match if there is one.

    Example: ``unknown backbone 'resnet5'; allowed: mobilenet_v2, resnet50 (did you mean
    'resnet50'?)``.
    """
    names = [str(c) for c in choices]
    message = f"unknown {what} {value!r}; allowed: {', '.join(names)}"
    close = difflib.get_close_matches(str(value), names, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message
