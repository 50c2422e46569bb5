"""Argument checks shared by every core package.

One integer validator, so that "is this a count?" is decided, and worded, the same way everywhere: a
`bool` is refused although it is an `int` subclass (`True` is not a batch size), numpy integers are
accepted, and the message says what was received and what was expected.
"""

from __future__ import annotations

import numpy as np


def check_int(name: str, value, *, minimum: int = 1, expected: str | None = None) -> int:
    """`value` as a plain int, or ValueError when it is not an integer of at least `minimum`.

    Args:
        name: the argument's name, echoed in the message ("Got image_size=0; ...").
        value: what the caller received. Python and numpy integers pass; bools, floats, strings and None
            do not (callers that allow None check for it first).
        minimum: the smallest allowed value (1 for sizes and counts, 0 where none is meaningful).
        expected: what to say after "expected", e.g. "a positive integer such as 224". Defaults to
            "a positive integer" (minimum 1) or "an integer of <minimum> or more".

    Returns:
        int(value).

    Raises:
        ValueError: "Got <name>=<value!r>; expected <expected>."

    Example::

        image_size = check_int("image_size", image_size, expected="a positive integer such as 224")
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        if expected is None:
            expected = "a positive integer" if minimum == 1 else f"an integer of {minimum} or more"
        raise ValueError(f"Got {name}={value!r}; expected {expected}.")
    return int(value)
