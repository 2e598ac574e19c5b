"""The one rule of argument checks (``lightning_spectral._internal.validation``): a wrong type raises a
``TypeError`` (also a ``ValueError``, what constructors raised before), a bad value a ``ValueError``; both name the
argument and what is allowed."""

import math

import numpy as np
import pytest
import torch

from lightning_spectral._internal.validation import (
    ArgumentTypeError,
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_non_negative_finite,
    check_open_unit_interval,
    check_positive_finite,
    resolve_dtype_device,
)


@pytest.mark.parametrize("value", [1.0, "3", True, None, [2]])
def test_check_int_wrong_type_is_a_type_error_naming_the_argument(value):
    with pytest.raises(TypeError, match=r"`k` must be an int \(>= 1\), got") as caught:
        check_int("k", value, 1)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ArgumentTypeError)


@pytest.mark.parametrize("value, minimum, maximum", [(0, 1, None), (-1, 0, None), (4, 0, 3)])
def test_check_int_out_of_range_is_a_value_error_not_a_type_error(value, minimum, maximum):
    with pytest.raises(ValueError, match="`k` must be") as caught:
        check_int("k", value, minimum, maximum=maximum)
    assert not isinstance(caught.value, TypeError)


def test_check_int_returns_a_python_int_and_allows_none_only_when_optional():
    assert check_int("k", np.int64(3), 1) == 3 and type(check_int("k", np.int64(3), 1)) is int
    assert check_int("k", None, 1, optional=True) is None
    with pytest.raises(TypeError, match=r"an int or None \(>= 1\)"):
        check_int("k", 1.5, 1, optional=True)
    assert check_int("batch", 2, 0, maximum=2) == 2


def test_real_number_checks():
    assert check_positive_finite("lr", 1) == 1.0 and isinstance(check_positive_finite("lr", 1), float)
    assert check_non_negative_finite("weight_decay", 0) == 0.0
    assert check_open_unit_interval("tol", 0.5) == 0.5
    for check, bad_value in [
        (check_positive_finite, 0.0),
        (check_positive_finite, math.inf),
        (check_non_negative_finite, -1e-9),
        (check_non_negative_finite, math.nan),
        (check_open_unit_interval, 1.0),
        (check_open_unit_interval, 0),
    ]:
        with pytest.raises(ValueError, match="`x` must be") as caught:
            check(("x"), bad_value)
        assert not isinstance(caught.value, TypeError), (check, bad_value)
    for check in (check_positive_finite, check_non_negative_finite, check_open_unit_interval):
        for bad_type in ("0.5", True, None, torch.tensor(0.5)):
            with pytest.raises(TypeError, match="`x` must be"):
                check("x", bad_type)


def test_bool_choice_callable_and_dtype():
    assert check_bool("flag", False) is False
    with pytest.raises(TypeError, match="`flag` must be True or False, got 1"):
        check_bool("flag", 1)
    assert check_choice("which", "LA", ("LA", "SA")) == "LA"
    with pytest.raises(ValueError, match=r"`which` must be one of \('LA', 'SA'\), got 'XX'"):
        check_choice("which", "XX", ("LA", "SA"))
    with pytest.raises(ValueError, match="`which` must be one of"):
        check_choice("which", ["LA"], {"LA", "SA"})  # unhashable: not a choice, not a crash
    check_callable("fn", None)
    with pytest.raises(TypeError, match="`fn` must be callable or None"):
        check_callable("fn", 3)
    assert resolve_dtype_device(None, None) == (torch.get_default_dtype(), torch.device("cpu"))
    with pytest.raises(ValueError, match="`dtype` must be a real floating-point"):
        resolve_dtype_device(torch.int64, None)
    with pytest.raises(TypeError, match="`dtype` must be a real floating-point"):
        resolve_dtype_device("float32", None)
