"""The NumPy mirrors of the kernel parameter structs (cupymla/params.py) must match
cuda_src/common/params.cuh byte for byte: a mismatch would silently hand a kernel garbage.

* the field names, order, C types and array lengths of the header (parsed here) equal the dtypes',
  and C's layout rules with the header's alignas(N) give the dtypes' offsets and sizes;
* NVRTC (no GPU needed) compiles static_asserts of every size, alignment, offset and field type;
* ``params.pack`` round-trips every value (an array field given as a sequence) and refuses a
  missing or an unknown field.

NumPy's dtype keeps no alignas: DECODE_PARAMS.alignment is 8 where C's alignof(DecodeParams) is 64
(k_map is alignas(64)). Only the offsets and the itemsize show it, so the alignment a mirror stands
for is read off its layout (``field_alignments``).
"""

import re
import struct
from collections import namedtuple

import numpy as np
import pytest

from cupymla import params

STRUCTS = {
    "MetadataParams": params.METADATA_PARAMS,
    "DecodeParams": params.DECODE_PARAMS,
    "CombineParams": params.COMBINE_PARAMS,
}

# C type of the header -> the dtype that mirrors it (all pointers are 64-bit addresses);
# of an array field, the type of its elements
C_TYPES = {"ptr": np.dtype(np.uint64), "long long": np.dtype(np.int64), "int": np.dtype(np.int32),
           "float": np.dtype(np.float32), "unsigned long long": np.dtype(np.uint64)}


def header_text():
    from cupymla import kernels
    return (kernels.cuda_src_dir() / "common" / "params.cuh").read_text()


# One member of a header struct: count is None for a scalar, else N of `T name[N]`; align is N
# of an `alignas(N)` prefix (it applies to every declarator of the declaration), else None.
Field = namedtuple("Field", "name ctype count align")

DECLARATOR = r"(\**)\s*([A-Za-z_]\w*)\s*(?:\[\s*(\d+)\s*\])?"


def parse_struct(text, name):
    """[Field] of `struct name { ... };`, pointers reported as "ptr"."""
    m = re.search(rf"\bstruct\s+{name}\s*\{{(.*?)\}};", text, re.S)
    assert m, f"struct {name} not found in params.cuh"
    body = re.sub(r"//[^\n]*|/\*.*?\*/", "", m.group(1), flags=re.S)
    fields = []
    for decl in body.split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        first, *rest = [d.strip() for d in decl.split(",")]
        m = re.fullmatch(r"(?:alignas\s*\(\s*(\d+)\s*\)\s*)?((?:const\s+)?[A-Za-z_][\w ]*?)\s*" + DECLARATOR,
                         first)
        assert m, f"cannot parse the declaration {decl!r} of {name}"
        align = int(m.group(1)) if m.group(1) else None
        base = " ".join(w for w in m.group(2).split() if w != "const")
        declarators = [m.groups()[2:]]
        for d in rest:
            m2 = re.fullmatch(DECLARATOR, d)
            assert m2, f"cannot parse the declaration {decl!r} of {name}"
            declarators.append(m2.groups())
        for stars, field, count in declarators:
            fields.append(Field(field, "ptr" if stars else base, int(count) if count else None, align))
    return fields


def test_parse_struct_handles_the_declaration_forms():
    text = """struct S {
        const void* a;   // comment, with; punctuation
        int *b, c;
        long long d, e; /* block
        comment */ float f;
        int g[4], *h[2], i;
        alignas(64) unsigned long long j[16];
        alignas( 16 ) float k, l[3];
    };"""
    assert parse_struct(text, "S") == [
        ("a", "ptr", None, None), ("b", "ptr", None, None), ("c", "int", None, None),
        ("d", "long long", None, None), ("e", "long long", None, None), ("f", "float", None, None),
        ("g", "int", 4, None), ("h", "ptr", 2, None), ("i", "int", None, None),
        ("j", "unsigned long long", 16, 64), ("k", "float", None, 16), ("l", "float", 3, 16)]


@pytest.mark.parametrize("decl", ["int a[N];", "int a[2][3];", "alignas(T) int a;", "int alignas(8) a;"])
def test_parse_struct_refuses_what_it_does_not_know(decl):
    with pytest.raises(AssertionError, match="cannot parse"):
        parse_struct(f"struct S {{ {decl} }};", "S")


def field_alignments(dtype):
    """{field: the alignment the mirror gives it}: the alignas it declares (params._struct keeps
    it in the dtype's metadata), else its natural one, or, where the mirror pads more than that
    asks, the smallest power of two that puts the field at its offset."""
    declared = (dtype.metadata or {}).get("alignas", {})
    aligns, pos = {}, 0
    for field in dtype.names:
        ftype, off = dtype.fields[field][:2]
        align = declared.get(field, ftype.base.alignment)
        while align < off and -(-pos // align) * align < off:
            align *= 2
        aligns[field] = align
        pos = off + ftype.itemsize
    return aligns


def c_alignment(dtype):
    """alignof() of the C struct the mirror stands for (NumPy's dtype.alignment ignores alignas)."""
    return max(field_alignments(dtype).values())


@pytest.mark.parametrize("name", list(STRUCTS))
def test_field_order_and_types_match_header(name):
    dtype = STRUCTS[name]
    header = parse_struct(header_text(), name)
    assert [f.name for f in header] == list(dtype.names), "field names or order differ from params.cuh"
    for field, ctype, count, _ in header:
        ftype = dtype.fields[field][0]
        assert ctype in C_TYPES, f"{name}.{field}: C type {ctype!r} has no mirror in params.py"
        assert ftype.base == C_TYPES[ctype], f"{name}.{field}: {ctype} vs {ftype.base}"
        shape = () if count is None else (count,)
        assert ftype.shape == shape, f"{name}.{field}: {ctype}{list(shape)} vs shape {ftype.shape}"


@pytest.mark.parametrize("name", list(STRUCTS))
def test_dtypes_are_c_aligned(name):
    """C's rules, with the header's alignas(N), lay the fields out where the mirror has them."""
    dtype = STRUCTS[name]
    assert dtype.isalignedstruct
    declared = {f.name: f.align for f in parse_struct(header_text(), name)}
    pos, struct_align = 0, 1
    for field in dtype.names:
        ftype, off = dtype.fields[field][:2]
        align = declared[field] or ftype.base.alignment
        where = f"{name}.{field} at {off}, C puts it at {-(-pos // align) * align}"
        assert off % align == 0 and off >= pos, where
        assert off - pos < align, where  # no more padding than C would insert
        pos = off + ftype.itemsize
        struct_align = max(struct_align, align)
    assert dtype.itemsize % struct_align == 0 and dtype.itemsize - pos < struct_align
    assert c_alignment(dtype) == struct_align >= dtype.alignment


@pytest.mark.parametrize("name, index", [("k_map", -2), ("q_map", -1)])
def test_decode_params_maps_are_64_byte_aligned_tensor_maps(name, index):
    """What the copy engine needs: 128 bytes (a CUtensorMap) at a 64-byte aligned offset."""
    ftype, off = params.DECODE_PARAMS.fields[name][:2]
    assert ftype.itemsize == 128 and off % 64 == 0
    assert field_alignments(params.DECODE_PARAMS)[name] == 64 == c_alignment(params.DECODE_PARAMS)
    assert parse_struct(header_text(), "DecodeParams")[index] == (name, "unsigned long long", 16, 64)


# --------------------------------------------------------------------------- NVRTC

KIND_CHECK = {"u": "is_ptr<T>::value", "i": "same<T, {ctype}>::value", "f": "same<T, float>::value"}
# element type of an array field: arrays mirror words (k_map: an opaque CUtensorMap), never pointers
ELEMENT_TYPES = {("u", 8): "unsigned long long", ("u", 4): "unsigned int", ("i", 8): "long long",
                 ("i", 4): "int", ("f", 4): "float"}


def layout_source(structs, header='#include "common/params.cuh"'):
    """A translation unit of static_asserts, one per size, alignment, offset and field type."""
    lines = [
        header,
        "// NVRTC's front end (EDG) rejects __builtin_offsetof here; __INTADDR__ is its constant-folding",
        "// spelling of the classic offsetof: the integer value of a member's address in a null object.",
        "#define FIELD_OFFSET(T, m) __INTADDR__(&((T*)0)->m)",
        "template <class A, class B> struct same { static constexpr bool value = false; };",
        "template <class A> struct same<A, A> { static constexpr bool value = true; };",
        "template <class T> struct is_ptr { static constexpr bool value = false; };",
        "template <class T> struct is_ptr<T*> { static constexpr bool value = true; };",
    ]
    for name, dtype in structs.items():
        lines.append(f'static_assert(sizeof({name}) == {dtype.itemsize}, "sizeof({name})");')
        lines.append(f'static_assert(alignof({name}) == {c_alignment(dtype)}, "alignof({name})");')
        for field in dtype.names:
            ftype, off = dtype.fields[field][:2]
            where = f"{name}.{field}"
            lines.append(f'static_assert(FIELD_OFFSET({name}, {field}) == {off}, "offset of {where}");')
            lines.append(f'static_assert(sizeof({name}::{field}) == {ftype.itemsize}, "size of {where}");')
            if ftype.shape:  # a fixed-size array: its element type and count at once
                elem = ELEMENT_TYPES.get((ftype.base.kind, ftype.base.itemsize), "?")
                dims = "".join(f"[{n}]" for n in ftype.shape)
                check = f"same<decltype({name}::{field}), {elem}{dims}>::value"
            else:
                ctype = {8: "long long", 4: "int"}.get(ftype.itemsize, "?")
                check = KIND_CHECK[ftype.kind].replace("T", f"decltype({name}::{field})").format(ctype=ctype)
            lines.append(f'static_assert({check}, "C type of {where}");')
    return "\n".join(lines) + "\n"


def nvrtc_compile(source):
    """Compile with NVRTC; return None on success, else the log."""
    from cupy.cuda import nvrtc

    from cupymla import kernels
    options = ["-arch=sm_80", "--std=c++17", f"-I{kernels.cuda_src_dir()}", "-default-device"]
    prog = nvrtc.createProgram(source, "params_layout.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except Exception:  # noqa: BLE001 - NVRTCError; the log says why
            return nvrtc.getProgramLog(prog)
        return None
    finally:
        nvrtc.destroyProgram(prog)


def test_layout_matches_nvrtc():
    pytest.importorskip("cupy")
    source = layout_source(STRUCTS)
    assert source.count("static_assert") == sum(2 + 3 * len(d.names) for d in STRUCTS.values())
    log = nvrtc_compile(source)
    assert log is None, f"params.py and params.cuh disagree:\n{log}"


def relaid(dtype, fields, unaligned=()):
    """[(name, type)] laid out as params.py lays out a mirror, each field keeping the alignas it has
    in `dtype` (but those in `unaligned`)."""
    aligns = field_alignments(dtype)
    return params._struct(*[
        (n, t) if n in unaligned or aligns[n] <= np.dtype(t).base.alignment else (n, t, aligns[n])
        for n, t in fields])


def swapped(dtype, a, b):
    names = list(dtype.names)
    i, j = names.index(a), names.index(b)
    names[i], names[j] = names[j], names[i]
    return relaid(dtype, [(n, dtype.fields[n][0]) for n in names])


def retyped(dtype, field, new):
    return relaid(dtype, [(n, new if n == field else dtype.fields[n][0]) for n in dtype.names])


def unaligned(dtype, field):
    return relaid(dtype, [(n, dtype.fields[n][0]) for n in dtype.names], unaligned=(field,))


DP = params.DECODE_PARAMS


def test_mutants_keep_the_alignas():
    assert retyped(DP, "causal", np.int32) == DP  # a no-op rebuilds the mirror exactly
    offsets = [f[1] for f in swapped(DP, "o_stride_b", "o_stride_s").fields.values()]
    assert sorted(offsets) == [DP.fields[n][1] for n in DP.names]  # same type: the same slots
    assert swapped(DP, "batch", "s_q").fields["k_map"][1] == 256
    assert unaligned(DP, "k_map").fields["k_map"][1] == 232   # right after q_map_rank (228), 8-aligned


@pytest.mark.parametrize("mutant, message", [
    (swapped(DP, "batch", "s_q"), "offset of DecodeParams.batch"),
    (swapped(DP, "q_stride_b", "k_stride_row"), "offset of DecodeParams.q_stride_b"),
    (swapped(DP, "causal", "scale_log2"), "offset of DecodeParams.causal"),
    (retyped(DP, "causal", np.float32), "C type of DecodeParams.causal"),
    (retyped(DP, "scale_log2", np.int32), "C type of DecodeParams.scale_log2"),
    (retyped(DP, "max_blocks", np.int32), "size of DecodeParams.max_blocks"),
    (retyped(DP, "q", np.int64), "C type of DecodeParams.q"),
    (retyped(DP, "q_stride_b", np.uint64), "C type of DecodeParams.q_stride_b"),
    (swapped(DP, "causal", "k_box_rows"), "offset of DecodeParams.causal"),
    (retyped(DP, "k_box_rows", np.int64), "size of DecodeParams.k_box_rows"),
    (swapped(DP, "k_box_rows", "k_map_rank"), "offset of DecodeParams.k_box_rows"),
    (unaligned(DP, "k_map"), "offset of DecodeParams.k_map"),
    (retyped(DP, "k_map", (np.uint64, 15)), "size of DecodeParams.k_map"),
    (retyped(DP, "k_map", (np.int64, 16)), "C type of DecodeParams.k_map"),
    (retyped(DP, "k_map", (np.uint32, 32)), "C type of DecodeParams.k_map"),
    (retyped(DP, "k_map", (np.uint64, (2, 8))), "C type of DecodeParams.k_map"),
    (retyped(DP, "k_map", np.uint64), "C type of DecodeParams.k_map"),
    (swapped(DP, "k_map_rank", "q_map_rank"), "offset of DecodeParams.k_map_rank"),
    (retyped(DP, "q_map", (np.uint64, 15)), "size of DecodeParams.q_map"),
])
def test_layout_check_catches_mismatches(mutant, message):
    """The check above is not vacuous: a reordered or retyped mirror fails to compile."""
    pytest.importorskip("cupy")
    log = nvrtc_compile(layout_source({"DecodeParams": mutant}))
    assert log is not None and message in log, log


K_MAP = "alignas(64) unsigned long long k_map[16];"


@pytest.mark.parametrize("decl, message", [
    ("alignas(128) unsigned long long k_map[16];", "alignof(DecodeParams)"),  # same offsets and size
    ("unsigned long long k_map[16];", "offset of DecodeParams.k_map"),
    ("alignas(64) unsigned long long k_map[15];", "size of DecodeParams.k_map"),
    ("alignas(64) long long k_map[16];", "C type of DecodeParams.k_map"),
    ("alignas(64) unsigned long long k_map[2][8];", "C type of DecodeParams.k_map"),
])
def test_layout_check_catches_header_changes(decl, message):
    """The other way round: a header that drifts from the mirror fails to compile too."""
    pytest.importorskip("cupy")
    text = header_text()
    assert text.count(K_MAP) == 1
    log = nvrtc_compile(layout_source({"DecodeParams": DP}, header=text.replace(K_MAP, decl)))
    assert log is not None and message in log, log


def test_reordered_mirror_fails_the_header_order_check():
    mutant = swapped(params.COMBINE_PARAMS, "o_stride_b", "o_stride_s")  # same type and size
    header = [f.name for f in parse_struct(header_text(), "CombineParams")]
    assert header == list(params.COMBINE_PARAMS.names)
    assert header != list(mutant.names)


# --------------------------------------------------------------------------- pack

def sample_value(kind, i):
    if kind == np.uint64:
        return [0x7F12_3456_7890 + 256 * i, 2 ** 64 - 16, 0][i % 3]
    elif kind == np.int64:
        return [(1 << 40) + i, -3 - i, 576][i % 3]
    elif kind == np.int32:
        return [2 ** 31 - 1 - i, -(2 ** 31) + i, i][i % 3]
    else:
        return 0.0625 * (i + 1)


def sample_values(dtype):
    """A value for every field; an array field gets a list, its even elements all distinct."""
    values = {}
    for i, name in enumerate(dtype.names):
        ftype = dtype.fields[name][0]
        if ftype.shape:
            values[name] = [sample_value(ftype.base, 3 * (i + j) + j % 2) for j in range(ftype.shape[0])]
        else:
            values[name] = sample_value(ftype, i)
    return values


@pytest.mark.parametrize("name", list(STRUCTS))
def test_pack_round_trips(name):
    dtype = STRUCTS[name]
    values = sample_values(dtype)
    packed = params.pack(dtype, **values)
    assert isinstance(packed, np.void) and packed.dtype == dtype
    for field, value in values.items():
        if dtype.fields[field][0].shape:
            assert packed[field].tolist() == value, field
        else:
            assert packed[field] == value, field
    # byte for byte what NumPy itself lays out, zero padding included
    ref = np.zeros((), dtype)
    for field, value in values.items():
        ref[field] = value
    assert packed.tobytes() == ref.tobytes()


def test_pack_decode_params_k_map_bytes():
    """k_map's 16 words land, in order, at the offset NVRTC confirms; the padding before it is zero."""
    values = sample_values(DP)
    assert len(values["k_map"]) == 16 and len(set(values["k_map"][::2])) == 8
    assert {2 ** 64 - 16} < set(values["k_map"])  # the top bit too
    raw = params.pack(DP, **values).tobytes()
    off = DP.fields["k_map"][1]
    assert off == 256 and len(raw) == DP.itemsize == 512
    assert raw[off:off + 128] == struct.pack("<16Q", *values["k_map"])
    assert DP.fields["q_map"][1] == 384 and raw[384:512] == struct.pack("<16Q", *values["q_map"])
    end = DP.fields["q_map_rank"][1] + 4
    assert raw[end:off] == bytes(off - end)
    # any sequence of 16 ints will do: a tuple, a NumPy array
    for k_map in (tuple(values["k_map"]), np.array(values["k_map"], np.uint64)):
        assert params.pack(DP, **{**values, "k_map": k_map}).tobytes() == raw


@pytest.mark.parametrize("length", [15, 17])
def test_pack_refuses_a_k_map_of_the_wrong_length(length):
    values = sample_values(DP)
    values["k_map"] = list(range(length))
    with pytest.raises((AssertionError, struct.error)):
        params.pack(DP, **values)


def test_pack_decode_params_floats():
    values = sample_values(params.DECODE_PARAMS)
    values["scale_log2"] = 0.1 * 1.4426950408889634
    packed = params.pack(params.DECODE_PARAMS, **values)
    assert packed["scale_log2"] == np.float32(values["scale_log2"])
    values["scale_log2"] = -2.5
    assert params.pack(params.DECODE_PARAMS, **values)["scale_log2"] == -2.5
    values["causal"] = True  # a bool is packed as 1
    assert params.pack(params.DECODE_PARAMS, **values)["causal"] == 1


@pytest.mark.parametrize("name", list(STRUCTS))
def test_pack_missing_field(name):
    dtype = STRUCTS[name]
    for field in (dtype.names[0], dtype.names[-1]):
        values = sample_values(dtype)
        del values[field]
        with pytest.raises(AssertionError, match=field):
            params.pack(dtype, **values)


@pytest.mark.parametrize("name", list(STRUCTS))
def test_pack_unknown_field(name):
    dtype = STRUCTS[name]
    values = sample_values(dtype)
    values["page_size"] = 64
    with pytest.raises(AssertionError, match="page_size"):
        params.pack(dtype, **values)


# --------------------------------------------------------------------------- Prepacked

def test_prepacked_fill_equals_pack():
    """The per-call refill must give the very bytes a full pack gives."""
    values = sample_values(params.DECODE_PARAMS)
    fixed = {k: v for k, v in values.items() if k in params.DECODE_PARAMS.names[10:]}
    changed = {k: fixed.pop(k) for k in ("o_stride_b", "o_stride_s", "o_stride_h", "k_box_rows", "k_map_rank",
                                         "k_map")}
    template = params.Prepacked(params.DECODE_PARAMS, 10, **fixed, **{k: (0 if k != "k_map" else [0] * 16)
                                                                       for k in changed})
    got = template.fill([values[n] for n in params.DECODE_PARAMS.names[:10]], **changed)
    assert got.tobytes() == params.pack(params.DECODE_PARAMS, **values).tobytes()


def test_prepacked_needs_leading_pointers():
    with pytest.raises(AssertionError, match="pointers"):
        params.Prepacked(params.DECODE_PARAMS, 11)
