"""The NumPy mirrors of the kernel parameter structs (cupymla/params.py) must match
cuda_src/common/params.cuh byte for byte: a mismatch would silently hand a kernel garbage.

* the field names, order and C types of the header (parsed here) equal the dtypes';
* NVRTC (no GPU needed) compiles static_asserts of every size, alignment, offset and field type;
* ``params.pack`` round-trips every value and refuses a missing or an unknown field.
"""

import re

import numpy as np
import pytest

from cupymla import params

STRUCTS = {
    "MetadataParams": params.METADATA_PARAMS,
    "DecodeParams": params.DECODE_PARAMS,
    "CombineParams": params.COMBINE_PARAMS,
}

# C type of the header -> the dtype that mirrors it (all pointers are 64-bit addresses)
C_TYPES = {"ptr": np.dtype(np.uint64), "long long": np.dtype(np.int64), "int": np.dtype(np.int32),
           "float": np.dtype(np.float32)}


def header_text():
    from cupymla import kernels
    return (kernels.cuda_src_dir() / "common" / "params.cuh").read_text()


def parse_struct(text, name):
    """[(field, C type)] of `struct name { ... };`, pointers reported as "ptr"."""
    m = re.search(rf"\bstruct\s+{name}\s*\{{(.*?)\}};", text, re.S)
    assert m, f"struct {name} not found in params.cuh"
    body = re.sub(r"//[^\n]*|/\*.*?\*/", "", m.group(1), flags=re.S)
    fields = []
    for decl in body.split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        first, *rest = [d.strip() for d in decl.split(",")]
        m = re.fullmatch(r"((?:const\s+)?[A-Za-z_][\w ]*?)\s*(\**)\s*([A-Za-z_]\w*)", first)
        assert m, f"cannot parse the declaration {decl!r} of {name}"
        base = " ".join(w for w in m.group(1).split() if w != "const")
        declarators = [(m.group(2), m.group(3))]
        for d in rest:
            m2 = re.fullmatch(r"(\**)\s*([A-Za-z_]\w*)", d)
            assert m2, f"cannot parse the declaration {decl!r} of {name}"
            declarators.append(m2.groups())
        for stars, field in declarators:
            fields.append((field, "ptr" if stars else base))
    return fields


def test_parse_struct_handles_the_declaration_forms():
    text = """struct S {
        const void* a;   // comment, with; punctuation
        int *b, c;
        long long d, e; /* block
        comment */ float f;
    };"""
    assert parse_struct(text, "S") == [("a", "ptr"), ("b", "ptr"), ("c", "int"), ("d", "long long"),
                                       ("e", "long long"), ("f", "float")]


@pytest.mark.parametrize("name", list(STRUCTS))
def test_field_order_and_types_match_header(name):
    dtype = STRUCTS[name]
    header = parse_struct(header_text(), name)
    assert [f for f, _ in header] == list(dtype.names), "field names or order differ from params.cuh"
    for field, ctype in header:
        assert ctype in C_TYPES, f"{name}.{field}: C type {ctype!r} has no mirror in params.py"
        assert dtype.fields[field][0] == C_TYPES[ctype], f"{name}.{field}: {ctype} vs {dtype.fields[field][0]}"


@pytest.mark.parametrize("name", list(STRUCTS))
def test_dtypes_are_c_aligned(name):
    dtype = STRUCTS[name]
    assert dtype.isalignedstruct
    pos = 0
    for field in dtype.names:
        ftype, off = dtype.fields[field][:2]
        assert off % ftype.alignment == 0 and off >= pos
        assert off - pos < ftype.alignment  # no more padding than C would insert
        pos = off + ftype.itemsize
    assert dtype.itemsize % dtype.alignment == 0 and dtype.itemsize - pos < dtype.alignment


# --------------------------------------------------------------------------- NVRTC

KIND_CHECK = {"u": "is_ptr<T>::value", "i": "same<T, {ctype}>::value", "f": "same<T, float>::value"}


def layout_source(structs):
    """A translation unit of static_asserts, one per size, alignment, offset and field type."""
    lines = [
        '#include "common/params.cuh"',
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
        lines.append(f'static_assert(alignof({name}) == {dtype.alignment}, "alignof({name})");')
        for field in dtype.names:
            ftype, off = dtype.fields[field][:2]
            where = f"{name}.{field}"
            lines.append(f'static_assert(FIELD_OFFSET({name}, {field}) == {off}, "offset of {where}");')
            lines.append(f'static_assert(sizeof({name}::{field}) == {ftype.itemsize}, "size of {where}");')
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


def swapped(dtype, a, b):
    names = list(dtype.names)
    i, j = names.index(a), names.index(b)
    names[i], names[j] = names[j], names[i]
    return np.dtype([(n, dtype.fields[n][0]) for n in names], align=True)


def retyped(dtype, field, new):
    return np.dtype([(n, new if n == field else dtype.fields[n][0]) for n in dtype.names], align=True)


DP = params.DECODE_PARAMS


@pytest.mark.parametrize("mutant, message", [
    (swapped(DP, "batch", "s_q"), "offset of DecodeParams.batch"),
    (swapped(DP, "q_stride_b", "k_stride_row"), "offset of DecodeParams.q_stride_b"),
    (swapped(DP, "causal", "scale_log2"), "offset of DecodeParams.causal"),
    (retyped(DP, "causal", np.float32), "C type of DecodeParams.causal"),
    (retyped(DP, "scale_log2", np.int32), "C type of DecodeParams.scale_log2"),
    (retyped(DP, "max_blocks", np.int32), "size of DecodeParams.max_blocks"),
    (retyped(DP, "q", np.int64), "C type of DecodeParams.q"),
    (retyped(DP, "q_stride_b", np.uint64), "C type of DecodeParams.q_stride_b"),
])
def test_layout_check_catches_mismatches(mutant, message):
    """The check above is not vacuous: a reordered or retyped mirror fails to compile."""
    pytest.importorskip("cupy")
    log = nvrtc_compile(layout_source({"DecodeParams": mutant}))
    assert log is not None and message in log, log


def test_reordered_mirror_fails_the_header_order_check():
    mutant = swapped(params.COMBINE_PARAMS, "o_stride_b", "o_stride_s")  # same type and size
    header = [f for f, _ in parse_struct(header_text(), "CombineParams")]
    assert header == list(params.COMBINE_PARAMS.names)
    assert header != list(mutant.names)


# --------------------------------------------------------------------------- pack

def sample_values(dtype):
    values = {}
    for i, name in enumerate(dtype.names):
        kind = dtype.fields[name][0]
        if kind == np.uint64:
            values[name] = [0x7F12_3456_7890 + 256 * i, 2 ** 64 - 16, 0][i % 3]
        elif kind == np.int64:
            values[name] = [(1 << 40) + i, -3 - i, 576][i % 3]
        elif kind == np.int32:
            values[name] = [2 ** 31 - 1 - i, -(2 ** 31) + i, i][i % 3]
        else:
            values[name] = 0.0625 * (i + 1)
    return values


@pytest.mark.parametrize("name", list(STRUCTS))
def test_pack_round_trips(name):
    dtype = STRUCTS[name]
    values = sample_values(dtype)
    packed = params.pack(dtype, **values)
    assert isinstance(packed, np.void) and packed.dtype == dtype
    for field, value in values.items():
        assert packed[field] == value, field
    # byte for byte what NumPy itself lays out, zero padding included
    ref = np.zeros((), dtype)
    for field, value in values.items():
        ref[field] = value
    assert packed.tobytes() == ref.tobytes()


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
