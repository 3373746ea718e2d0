"""Which Hopper kernel a page size gets (api._for_page), without a GPU."""

import pytest

from cupymla import api, kernels


@pytest.mark.parametrize("page_size, pages32, want", [
    (64, True, "decode_sm90_seesaw64.cu"), (128, True, "decode_sm90_seesaw64.cu"),
    (32, True, "decode_sm90_seesaw64.cu"),     # two 32-row boxes a slice
    (32, False, "decode_sm90_seesaw.cu"),      # CUPYMLA_SEESAW64_P32=0: the 32-token seesaw, as before
    (16, True, "decode_sm90.cu"),
])
def test_128_rows_by_page_size(monkeypatch, page_size, pages32, want):
    monkeypatch.setattr(api, "_SEESAW64_PAGES32", pages32)
    cfg = api._for_page(kernels.decode_config(128, kernels.SM90, 576), page_size)
    assert cfg.file == want
