"""NumPy mirrors of the kernel parameter structs in ``cuda_src/common/params.cuh``.

Each struct is passed to its kernel by value as a NumPy structured scalar (CuPy copies
its bytes into the launch arguments). ``align=True`` lays the fields out as a C compiler
does, so the field order and C types here must match the header exactly; tests compare
the sizes and offsets with what NVRTC reports.
"""

from __future__ import annotations

import struct

import numpy as np

_PTR = np.uint64
_I64 = np.int64
_I32 = np.int32
_F32 = np.float32


def _struct(*fields):
    """A C struct's layout; a field given as (name, type, align) gets that alignas()."""
    names, formats, offsets, pos, struct_align = [], [], [], 0, 1
    for name, typ, *align in fields:
        dt = np.dtype(typ)
        a = align[0] if align else dt.base.itemsize
        pos = -(-pos // a) * a
        names.append(name)
        formats.append(dt)
        offsets.append(pos)
        pos += dt.itemsize
        struct_align = max(struct_align, a)
    # metadata["alignas"]: the alignas() given, which the layout alone may not reveal
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": -(-pos // struct_align) * struct_align}, align=True,
                    metadata={"alignas": {name: typ_align[0] for name, _, *typ_align in fields if typ_align}})


METADATA_PARAMS = _struct(
    ("seqlens", _PTR), ("sched", _PTR), ("num_splits", _PTR),
    ("batch", _I32), ("num_parts", _I32),
)

DECODE_PARAMS = _struct(
    ("q", _PTR), ("k_cache", _PTR), ("block_table", _PTR), ("seqlens", _PTR),
    ("sched", _PTR), ("num_splits", _PTR), ("out", _PTR), ("lse", _PTR),
    ("o_accum", _PTR), ("lse_accum", _PTR),
    ("q_stride_b", _I64), ("q_stride_s", _I64), ("q_stride_h", _I64),
    ("k_stride_page", _I64), ("k_stride_row", _I64), ("k_stride_head", _I64),
    ("bt_stride_b", _I64), ("max_blocks", _I64), ("num_pages", _I64),
    ("o_stride_b", _I64), ("o_stride_s", _I64), ("o_stride_h", _I64),
    ("batch", _I32), ("s_q", _I32), ("h_q", _I32), ("h_kv", _I32),
    ("heads_per_kv", _I32), ("rows", _I32), ("page_shift", _I32), ("num_parts", _I32),
    ("causal", _I32), ("scale_log2", _F32),
    ("k_box_rows", _I32), ("k_map_rank", _I32), ("k_box_slices", _I32), ("q_map_rank", _I32),
    ("k_map", (np.uint64, 16), 64), ("q_map", (np.uint64, 16), 64),
)

COMBINE_PARAMS = _struct(
    ("o_accum", _PTR), ("lse_accum", _PTR), ("num_splits", _PTR), ("out", _PTR), ("lse", _PTR),
    ("o_stride_b", _I64), ("o_stride_s", _I64), ("o_stride_h", _I64),
    ("batch", _I32), ("s_q", _I32), ("h_q", _I32), ("h_kv", _I32), ("heads_per_kv", _I32), ("rows", _I32),
)


def _struct_format(dtype: np.dtype) -> struct.Struct:
    """A ``struct`` layout with the same bytes as ``dtype``: packing is ~10x faster than NumPy."""
    codes = {np.dtype(_PTR): "Q", np.dtype(_I64): "q", np.dtype(_I32): "i", np.dtype(_F32): "f"}
    fmt, pos = "<", 0
    for name in dtype.names:
        field, offset = dtype.fields[name][:2]
        count = field.itemsize // field.base.itemsize   # a fixed-size array is given as a sequence
        fmt += "x" * (offset - pos) + (str(count) if field.shape else "") + codes[field.base]
        pos = offset + field.itemsize
    return struct.Struct(fmt + "x" * (dtype.itemsize - pos))


_FORMATS = {}


def pack(dtype: np.dtype, **values) -> np.void:
    """Build one struct value; every field must be given (a forgotten one is a bug, not a zero)."""
    fmt = _FORMATS.get(dtype)
    if fmt is None:
        fmt = _FORMATS[dtype] = _struct_format(dtype)
    try:
        flat = []
        for name in dtype.names:
            v = values[name]
            if dtype.fields[name][0].shape:
                flat.extend(v)
            else:
                flat.append(v)
        raw = fmt.pack(*flat)
    except KeyError as missing:
        raise AssertionError(f"params: field {missing} not given") from None
    if len(values) != len(dtype.names):
        raise AssertionError(f"params: unknown fields {sorted(set(values) - set(dtype.names))}")
    return np.frombuffer(raw, dtype=dtype)[0]


class Prepacked:
    """A struct packed once with its per-shape fields, refilled per call with the fields that
    change (pointers first, then any named ones): the host cost of a decode call is mostly here."""

    def __init__(self, dtype: np.dtype, n_pointers: int, **fixed):
        if any(dtype.fields[n][0] != np.dtype(_PTR) or dtype.fields[n][1] != 8 * i
               for i, n in enumerate(dtype.names[:n_pointers])):
            raise AssertionError("Prepacked: the struct must start with its pointers")
        self.dtype = dtype
        self.pointer_names = dtype.names[:n_pointers]
        zeros = {name: 0 for name in self.pointer_names}
        self._raw = bytes(pack(dtype, **zeros, **fixed).tobytes())
        self._pointers = struct.Struct(f"<{n_pointers}Q")
        self._field_formats = {}

    @property
    def raw(self) -> bytes:
        """The struct with its per-shape fields and zero pointers."""
        return self._raw

    def pack_pointers(self, buf, pointers) -> None:
        """Write only the pointers (the struct's first fields) into ``buf``."""
        self._pointers.pack_into(buf, 0, *pointers)

    def fill_into(self, buf, pointers, last: dict, **changed) -> None:
        """Write the pointers and the changed fields into ``buf`` (a copy of ``raw`` that earlier
        calls filled); a field given the very object it got last time (``last``) is left as is."""
        self._pointers.pack_into(buf, 0, *pointers)
        for name, value in changed.items():
            if last.get(name) is value:
                continue
            st, offset, is_array = self._field_format(name)
            if is_array:
                st.pack_into(buf, offset, *value)
            else:
                st.pack_into(buf, offset, value)
            last[name] = value

    def _field_format(self, name):
        fmt = self._field_formats.get(name)
        if fmt is None:
            field, offset = self.dtype.fields[name][:2]
            count = field.itemsize // field.base.itemsize
            code = {np.dtype(_PTR): "Q", np.dtype(_I64): "q", np.dtype(_I32): "i", np.dtype(_F32): "f"}[field.base]
            fmt = self._field_formats[name] = (struct.Struct(f"<{count}{code}"), offset, bool(field.shape))
        return fmt

    def fill(self, pointers, **changed) -> np.void:
        return np.frombuffer(self.fill_bytes(pointers, **changed), dtype=self.dtype)[0]

    def fill_bytes(self, pointers, **changed) -> bytearray:
        buf = bytearray(self._raw)
        self.fill_into(buf, pointers, {}, **changed)
        return buf
