import numpy as np
import pytest

from stablebptt.plots.curves import moving_average


def test_moving_average_trailing_window_with_short_start():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # fewer entries at the start, then the mean of the last 3
    np.testing.assert_allclose(moving_average(y, 3), [1.0, 1.5, 2.0, 3.0, 4.0], rtol=0, atol=0)
    np.testing.assert_array_equal(moving_average(y, 1), y)
    np.testing.assert_allclose(moving_average(y, 10), np.cumsum(y) / np.arange(1, 6))


def test_moving_average_keeps_small_values_after_a_huge_one():
    # an exploding update (1e17) followed by small ones: a running cumulative sum cancels them to 0
    y = np.array([1e-3] * 5 + [1e17] + [2e-3] * 30)
    out = moving_average(y, 4)
    np.testing.assert_allclose(out[10:], 2e-3, rtol=1e-12)
    assert np.all(out > 0)


def test_moving_average_propagates_nan_and_refuses_bad_window():
    out = moving_average([1.0, np.nan, 1.0, 1.0, 1.0], 2)
    assert np.isnan(out[1]) and np.isnan(out[2]) and out[3] == 1.0
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)
    assert moving_average([], 3).shape == (0,)
