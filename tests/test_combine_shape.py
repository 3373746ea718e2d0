"""combine.cu's launch shape (api._combine_shape), no GPU needed: the grid must cover every row of
every sequence with the columns the chosen build handles, whatever the shape."""

import pytest

from cupymla import api


@pytest.mark.parametrize("num_parts, batch, tasks", [
    (132, 1, 16), (132, 4, 64), (132, 8, 128), (132, 32, 128), (132, 128, 16), (66, 2, 32), (132, 8, 1),
])
def test_grid_covers_rows_and_columns(num_parts, batch, tasks):
    defines, grid, block = api._combine_shape(num_parts, batch, tasks, sms=132)
    if defines["MLA_COMBINE_WIDE"]:
        cols = defines["MLA_COMBINE_COLS"]
        assert cols in (128, 256, 512) and grid == (tasks, batch, 512 // cols) and block == (256,)
    else:   # four rows a CTA, a warp each, all 512 columns
        assert grid[0] * 4 >= tasks > (grid[0] - 1) * 4 and grid[1:] == (batch, 1) and block == (128,)


def test_wide_shape_keeps_the_sms_busy():
    # One sequence of 16 rows: 256-column CTAs would be 32 for 132 SMs, so 128-column ones (64).
    assert api._combine_shape(132, 1, 16, sms=132)[0]["MLA_COMBINE_COLS"] == 128
    # b4 s_q4 h_q16 (64 rows) and b8 h_q128: enough rows for half as many CTAs.
    assert api._combine_shape(132, 4, 64, sms=132)[0]["MLA_COMBINE_COLS"] == 256
    assert api._combine_shape(132, 8, 128, sms=132)[0]["MLA_COMBINE_COLS"] == 256
    # Many sequences, few pieces each: a warp per row.
    assert api._combine_shape(132, 32, 128, sms=132)[0] == {"MLA_COMBINE_WIDE": 0}


def test_columns_override_for_comparing(monkeypatch):
    monkeypatch.setenv("CUPYMLA_DEFINES", "combine.cu:MLA_COMBINE_COLS=512")
    defines, grid, _ = api._combine_shape(132, 8, 128, sms=132)
    assert defines["MLA_COMBINE_COLS"] == 512 and grid == (128, 8, 1)
