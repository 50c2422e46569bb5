"""Tests for core.validation: the one integer check, its refusals and its message."""

import re

import numpy as np
import pytest

from core.validation import check_int


@pytest.mark.parametrize("value", [1, 224, np.int64(7), np.uint8(3)])
def test_integers_of_at_least_the_minimum_pass_as_plain_ints(value):
    result = check_int("size", value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [0, -1, True, np.bool_(True), 2.0, "3", None])
def test_everything_else_is_refused_with_what_was_received(value):
    with pytest.raises(ValueError, match=rf"^Got size={re.escape(repr(value))}; expected a positive integer\.$"):
        check_int("size", value)


def test_minimum_and_wording_can_be_given():
    assert check_int("n", 0, minimum=0) == 0
    with pytest.raises(ValueError, match=r"^Got n=-1; expected an integer of 0 or more\.$"):
        check_int("n", -1, minimum=0)
    with pytest.raises(ValueError, match=r"^Got max_side=0; expected None or a positive integer such as 1024\.$"):
        check_int("max_side", 0, expected="None or a positive integer such as 1024")
