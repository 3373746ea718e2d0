"""CPU tests of the kernel build (cupymla/kernels.py): NVRTC needs no GPU.

* the decode kernel compiles for one configuration of each architecture family with no
  register spills and no stack frame (it is the hot loop of every decode step);
* every tile configuration `decode_config` picks fits the shared memory of its GPU;
* the on-disk cache is keyed by the sources (headers included), the options and the arch;
* a compile error surfaces as a RuntimeError carrying NVRTC's log.
"""

import shutil
import time

import pytest

from cupymla import kernels
from cupymla.kernels import DecodeConfig, ctas_per_sm, decode_config, smem_optin

pytest.importorskip("cupy")

CCS = [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)]
ROWS = [1, 16, 17, 32, 33, 64, 128, 2048]


@pytest.fixture(autouse=True)
def default_decode_path(monkeypatch):
    """Tests see the automatic kernel choice, whatever the environment forces."""
    monkeypatch.delenv("CUPYMLA_DECODE_PATH", raising=False)
    monkeypatch.delenv("CUPYMLA_SM90_NARROW", raising=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty compile cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CUPYMLA_CACHE_DIR", str(path))
    assert kernels.cache_dir() == path
    return path


@pytest.fixture
def src_copy(tmp_path, monkeypatch):
    """A private copy of cuda_src/ that kernels.py compiles from; caches restored afterwards."""
    real = kernels.cuda_src_dir()
    dst = tmp_path / "cuda_src"
    shutil.copytree(real, dst)
    kernels.cuda_src_dir.cache_clear()
    kernels.sources_hash.cache_clear()
    monkeypatch.setattr(kernels, "cuda_src_dir", lambda: dst)
    yield dst
    kernels.sources_hash.cache_clear()   # monkeypatch puts the real cuda_src_dir back after this


class NoCompile:
    """Stands in for cupy.cuda.nvrtc: everything works except compiling."""

    real = kernels._nvrtc()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def createProgram(self, *args, **kwargs):
        raise AssertionError("NVRTC was asked to compile: the cache missed")


# --------------------------------------------------------------------------- the decode kernel compiles

CASES = [  # arch, compute capability, rows per kv head, fp16, head dim, path: one configuration per arch
    ("sm_80", (8, 0), 64, 0, 576, None),
    ("sm_86", (8, 6), 16, 1, 576, None),
    ("sm_90a", (9, 0), 32, 0, 512, "sm80"),     # the portable kernel, forced on Hopper
    ("sm_90a", (9, 0), 64, 0, 576, None),       # Hopper's own (wgmma) kernel
    ("sm_120", (12, 0), 128, 1, 576, None),
]


@pytest.mark.parametrize("arch, cc, rows, fp16, head_dim, path", CASES,
                         ids=[f"{c[0]}-{c[5] or 'auto'}" for c in CASES])
def test_decode_compiles_without_spills(cache, arch, cc, rows, fp16, head_dim, path):
    cfg = decode_config(rows, cc, head_dim, path)
    c = kernels.compile_source(cfg.file, arch, {"MLA_FP16": fp16, **cfg.defines()}, use_cache=False)
    assert c.name == kernels.KERNEL_NAMES[cfg.file] and not c.is_ptx
    assert c.binary[:4] == b"\x7fELF"
    assert c.name in c.log and f"for '{arch}'" in c.log
    assert 0 < c.registers <= 255, c.log            # the ptxas report was found and parsed
    assert c.spill_bytes == 0, c.log
    assert c.stack_bytes == 0, c.log
    assert "serialized" not in c.log, c.log       # ptxas gave up overlapping the wgmmas (C751x)
    # a CTA of this shape can be resident at all: registers (allocated per warp in units of 256)
    warp_regs = -(-c.registers * 32 // 256) * 256
    assert warp_regs * (cfg.threads // 32) <= 65536
    assert cfg.smem_bytes <= smem_optin(cc)
    assert not list(cache.iterdir()) if cache.exists() else True   # use_cache=False writes nothing


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_portable_kernel_with_16bit_partials_compiles(cache, arch):
    """A seesaw plan's portable fallback is built with MLA_ACC16 (api._partials_16bit)."""
    cfg = decode_config(64, (8, 0), 576, "sm80")
    c = kernels.compile_source(cfg.file, arch, {"MLA_FP16": 0, "MLA_ACC16": 1, **cfg.defines()}, use_cache=False)
    assert c.registers > 0 and c.spill_bytes == 0 and c.stack_bytes == 0, c.log


@pytest.mark.parametrize("defines", [{"MLA_Q_REGS": 0}, {"MLA_Q_REGS": 12}, {"MLA_WG0_OVERLAP": 1},
                                     {"MLA_S_ORDER": 0}, {"MLA_MAX_SLACK": "0.0f"}, {"MLA_TRACE": 1},
                                     {"MLA_TRACE": 2}, {"MLA_Q_BULK": 0}, {"MLA_ACC16": 1},
                                     {"MLA_FP16": 1, "MLA_HEAD_DIM": 512, "MLA_WG0_OVERLAP": 1}],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_seesaw_knobs_compile(cache, defines):
    """Every tuning knob of the Hopper seesaw kernel builds without spills and without ptxas
    serialising its wgmmas, so a variant run (bench/variants.sh) measures what it names."""
    c = kernels.compile_source("decode_sm90_seesaw.cu", "sm_90a", {"MLA_FP16": 0, **defines}, use_cache=False)
    assert c.spill_bytes == 0 and c.stack_bytes == 0, c.log
    assert "serialized" not in c.log, c.log


@pytest.mark.parametrize("defines", [{"MLA_Q_REGS": 4}, {"MLA_TRACE": 1}, {"MLA_B_SPLIT": 0}, {"MLA_P_A_FIRST": 0},
                                     {"MLA_P_B_FIRST": 1}, {"MLA_Q_TMA": 0}, {"MLA_OUT8": 0}, {"MLA_KV_HINT": 0},
                                     {"MLA_KV_HINT": 2}, {"MLA_MAX_SLACK": "0.0f"}, {"MLA_CLOCKS": 1}, {"MLA_ACC16": 1},
                                     {"MLA_FP16": 1, "MLA_HEAD_DIM": 512, "MLA_TRACE": 1}],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_seesaw64_knobs_compile(cache, defines):
    """The same for the 64-token seesaw's knobs."""
    c = kernels.compile_source("decode_sm90_seesaw64.cu", "sm_90a", {"MLA_FP16": 0, **defines}, use_cache=False)
    assert c.spill_bytes == 0 and c.stack_bytes == 0, c.log
    assert "serialized" not in c.log, c.log


@pytest.mark.parametrize("knob", ["MLA_CLOCKS", "MLA_PHASE_CLOCKS", "MLA_FAKE_KV_LOAD"])
@pytest.mark.parametrize("block_m", [16, 32])
def test_narrow_diagnostics_compile(cache, block_m, knob):
    """decode_sm90_narrow.cu's diagnostics builds (MLA_CLOCKS: bench/clock_probe.py,
    MLA_PHASE_CLOCKS: bench/phase_probe.py, MLA_FAKE_KV_LOAD) stay spill-free."""
    c = kernels.compile_source("decode_sm90_narrow.cu", "sm_90a",
                               {"MLA_FP16": 0, "MLA_BLOCK_M": block_m, knob: 1}, use_cache=False)
    assert c.spill_bytes == 0 and c.stack_bytes == 0, c.log


@pytest.mark.parametrize("file, defines", [("combine.cu", {"MLA_FP16": 0, "MLA_COMBINE_WIDE": 0}),
                                           ("combine.cu", {"MLA_FP16": 1, "MLA_COMBINE_WIDE": 1}),
                                           ("combine.cu", {"MLA_FP16": 0, "MLA_COMBINE_WIDE": 0, "MLA_ACC16": 1}),
                                           ("combine.cu", {"MLA_FP16": 1, "MLA_COMBINE_WIDE": 1, "MLA_ACC16": 1}),
                                           ("metadata.cu", {})])
def test_small_kernels_compile_without_spills(cache, file, defines):
    c = kernels.compile_source(file, "sm_80", defines, use_cache=False)
    assert c.name == kernels.KERNEL_NAMES[file]
    assert c.registers > 0 and c.spill_bytes == 0 and c.stack_bytes == 0, c.log


def test_ptx_target(cache):
    c = kernels.compile_source("metadata.cu", "compute_80", use_cache=False)
    assert c.is_ptx and b".entry mla_metadata" in c.binary


# --------------------------------------------------------------------------- configurations

def test_smem_optin_table():
    assert smem_optin((8, 0)) == 163 * 1024
    assert smem_optin((9, 0)) == smem_optin((10, 0)) == 227 * 1024
    assert smem_optin((8, 6)) == smem_optin((8, 9)) == smem_optin((12, 0)) == 99 * 1024


@pytest.mark.parametrize("cc", CCS)
@pytest.mark.parametrize("rows", ROWS)
def test_decode_config(cc, rows):
    want_m = 16 if rows <= 16 else 32 if rows <= 32 else 64
    for head_dim in (576, 512):
        auto = decode_config(rows, cc, head_dim)
        if cc == (9, 0):   # Hopper: the narrow wgmma kernel for <= 32 rows, else a seesaw
            if rows <= 32:
                assert (auto.path, auto.block_m, auto.block_n, auto.threads) == ("sm90", want_m, 64, 160)
                assert auto.file == "decode_sm90_narrow.cu"
                assert auto.defines() == {"MLA_HEAD_DIM": head_dim, "MLA_BLOCK_M": want_m}
            else:
                big = rows > 64   # the 64-token seesaw; one m tile takes the 32-token one
                assert (auto.path, auto.block_m, auto.block_n, auto.stages, auto.threads) == \
                    ("sm90", 64, 64 if big else 32, 2 if big else 4, 384)
                assert auto.file == ("decode_sm90_seesaw64.cu" if big else "decode_sm90_seesaw.cu")
                assert auto.defines() == {"MLA_HEAD_DIM": head_dim}
            assert auto.smem_bytes <= smem_optin(cc), (auto, smem_optin(cc))
            assert auto in kernels.all_decode_configs(cc)
            assert ctas_per_sm(auto, smem_optin(cc) + 1024, 255) >= 1
        else:
            assert auto == decode_config(rows, cc, head_dim, "sm80")
        cfg = decode_config(rows, cc, head_dim, "sm80")
        assert cfg.path == "sm80" and cfg.file == "decode_sm80.cu"
        assert cfg.block_m == want_m and cfg.head_dim == head_dim
        assert cfg.smem_bytes <= smem_optin(cc), (cfg, smem_optin(cc))
        # the static_asserts at the top of decode_sm80.cu, checked without compiling
        tn = cfg.block_n // cfg.warps_n
        assert cfg.block_m % 16 == 0 and cfg.block_n % 16 == 0 and tn % 8 == 0 and 64 % cfg.block_n == 0
        assert (512 // cfg.warps_n) % 16 == 0 and cfg.stages in (1, 2)
        assert cfg.threads == cfg.block_m // 16 * cfg.warps_n * 32 <= 1024
        assert set(cfg.defines()) == {"MLA_HEAD_DIM", "MLA_BLOCK_M", "MLA_WARPS_N", "MLA_BLOCK_N", "MLA_STAGES"}
        assert cfg in kernels.all_decode_configs(cc)
        for regs in (32, 128, 255):
            assert ctas_per_sm(cfg, smem_optin(cc) + 1024, regs) >= 1


@pytest.mark.parametrize("cfg", [DecodeConfig(64, 2, 32, 2), DecodeConfig(16, 4, 32, 2), DecodeConfig(32, 4, 32, 1),
                                 DecodeConfig(64, 2, 16, 1, 512), DecodeConfig(64, 2, 64, 2, 576, "sm90"),
                                 DecodeConfig(64, 2, 64, 2, 512, "sm90"), DecodeConfig(16, 1, 64, 2, 576, "sm90"),
                                 DecodeConfig(32, 1, 64, 2, 576, "sm90"), DecodeConfig(32, 1, 64, 2, 512, "sm90"),
                                 DecodeConfig(64, 2, 32, 4, 576, "sm90"), DecodeConfig(64, 2, 32, 4, 512, "sm90"),
                                 DecodeConfig(64, 2, 64, 2, 576, "sm90", "seesaw64"),
                                 DecodeConfig(64, 2, 64, 2, 512, "sm90", "seesaw64")],
                         ids=str)
def test_smem_bytes_cover_the_kernels_struct(cfg):
    """The host's window size must hold the kernel's `struct Smem` (checked by NVRTC itself);
    the sm90 kernel also needs up to 1 KB to align it to 1024 bytes."""
    from cupy.cuda import nvrtc
    slack = 1024 if cfg.path == "sm90" else 0
    src = (f'#include "{cfg.file}"\n'
           f"static_assert(sizeof(Smem) + {slack} <= {cfg.smem_bytes}, \"window too small\");\n"
           f"static_assert(sizeof(Smem) + {slack} + 1024 > {cfg.smem_bytes}, \"window wastes over 1 KB\");\n")
    defines = [f"-D{k}={v}" for k, v in {"MLA_FP16": 0, **cfg.defines()}.items()]
    prog = nvrtc.createProgram(src, "smem_check.cu", [], [])
    try:
        nvrtc.compileProgram(prog, ["-arch=sm_90a", "--std=c++17", f"-I{kernels.cuda_src_dir()}",
                                    "-default-device", *defines])
    except Exception:  # noqa: BLE001 - show NVRTC's log, which names the failed assertion
        pytest.fail(nvrtc.getProgramLog(prog))
    finally:
        nvrtc.destroyProgram(prog)


def test_ctas_per_sm():
    cfg = DecodeConfig(16, 4, 32, 2)            # 128 threads, ~94 KB (see test_smem_bytes_cover_the_kernels_struct)
    assert 90 * 1024 < cfg.smem_bytes < 114 * 1024
    assert ctas_per_sm(cfg, 228 * 1024, 128) == 2           # smem-bound
    assert ctas_per_sm(cfg, 228 * 1024, 255) == 2           # 256 regs * 128 threads: 2 by registers too
    assert ctas_per_sm(DecodeConfig(64, 2, 32, 2), 228 * 1024, 255) == 1
    assert ctas_per_sm(cfg, 1024, 255) == 1                 # never 0


def test_all_decode_configs_unique():
    for cc in CCS:
        configs = kernels.all_decode_configs(cc)
        assert len(configs) == len(set(configs))
        assert {(c.block_m, c.head_dim) for c in configs if c.path == "sm80"} == \
            {(m, d) for m in (16, 32, 64) for d in (576, 512)}


def test_decode_path_choice(monkeypatch):
    with pytest.raises(ValueError, match="9.0"):
        decode_config(64, (8, 0), path="sm90")
    with pytest.raises(ValueError, match="sm80"):
        decode_config(64, (8, 0), path="sm70")
    monkeypatch.setenv("CUPYMLA_DECODE_PATH", "sm80")
    assert decode_config(64, (9, 0)).path == "sm80"


def test_target_arch(monkeypatch):
    class Fake:
        @staticmethod
        def getSupportedArchs():
            return (75, 80, 86, 89, 90, 100, 120)

        @staticmethod
        def getVersion():
            return (12, 8)

    monkeypatch.setattr(kernels, "_nvrtc", lambda: Fake())
    f = "decode_sm80.cu"
    assert kernels._target_arch((8, 0), f) == "sm_80"
    assert kernels._target_arch((12, 0), f) == "sm_120"
    assert kernels._target_arch((8, 7), f) == "compute_86"     # unknown arch: PTX of the newest below it
    assert kernels._target_arch((13, 0), "combine.cu") == "compute_120"
    assert kernels._target_arch((9, 0), "decode_sm90.cu") == "sm_90a"
    with pytest.raises(RuntimeError, match="cannot target"):
        kernels._target_arch((7, 0), f)


# --------------------------------------------------------------------------- sources hash and cache

def test_sources_hash_follows_the_headers(src_copy):
    kernels.sources_hash.cache_clear()
    base = kernels.sources_hash()
    assert len(base) == 16
    (src_copy / "notes.txt").write_text("not a source")
    kernels.sources_hash.cache_clear()
    assert kernels.sources_hash() == base
    header = src_copy / "common" / "params.cuh"
    header.write_text(header.read_text() + "\n// an edit\n")
    kernels.sources_hash.cache_clear()
    edited = kernels.sources_hash()
    assert edited != base
    (src_copy / "common" / "extra.cuh").write_text("#pragma once\n")
    kernels.sources_hash.cache_clear()
    assert kernels.sources_hash() not in (base, edited)


def test_sources_hash_of_a_copy_equals_the_original(tmp_path, monkeypatch):
    real = kernels.sources_hash()
    dst = tmp_path / "elsewhere" / "cuda_src"
    shutil.copytree(kernels.cuda_src_dir(), dst)
    kernels.sources_hash.cache_clear()
    monkeypatch.setattr(kernels, "cuda_src_dir", lambda: dst)
    try:
        assert kernels.sources_hash() == real   # paths are hashed relative to cuda_src/
    finally:
        kernels.sources_hash.cache_clear()


def test_compile_cache(cache, monkeypatch):
    defines = {"MLA_FP16": 0, **decode_config(16, (8, 0), path="sm80").defines()}
    t0 = time.perf_counter()
    first = kernels.compile_source("decode_sm80.cu", "sm_80", defines)
    t1 = time.perf_counter()
    files = sorted(p.suffix for p in cache.iterdir())
    assert files == [".cubin", ".log"]
    assert all(p.name.startswith("decode_sm80-sm_80-") for p in cache.iterdir())

    monkeypatch.setattr(kernels, "_nvrtc", NoCompile)
    t2 = time.perf_counter()
    second = kernels.compile_source("decode_sm80.cu", "sm_80", dict(reversed(list(defines.items()))))
    t3 = time.perf_counter()
    assert second.binary == first.binary
    assert (second.registers, second.spill_bytes, second.stack_bytes) == \
        (first.registers, first.spill_bytes, first.stack_bytes)
    assert t3 - t2 < (t1 - t0) / 5, (t1 - t0, t3 - t2)

    # anything that changes the binary misses the cache: defines, arch, use_cache=False
    for file, arch, defs, use in [("decode_sm80.cu", "sm_80", {**defines, "MLA_FP16": 1}, True),
                                  ("decode_sm80.cu", "sm_86", defines, True),
                                  ("decode_sm80.cu", "sm_80", defines, False)]:
        with pytest.raises(AssertionError, match="cache missed"):
            kernels.compile_source(file, arch, defs, use_cache=use)


def test_cache_key_includes_sources(cache, src_copy, monkeypatch):
    kernels.compile_source("metadata.cu", "sm_80")
    monkeypatch.setattr(kernels, "_nvrtc", NoCompile)
    kernels.compile_source("metadata.cu", "sm_80")                  # a hit
    header = src_copy / "common" / "params.cuh"
    header.write_text(header.read_text() + "\n// an edit\n")
    kernels.sources_hash.cache_clear()
    with pytest.raises(AssertionError, match="cache missed"):
        kernels.compile_source("metadata.cu", "sm_80")              # a header edit is a miss


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CUPYMLA_CACHE_DIR", str(blocker / "cache"))   # cannot be created
    c = kernels.compile_source("metadata.cu", "sm_80")
    assert c.registers > 0


# --------------------------------------------------------------------------- errors

def test_syntax_error_gives_the_nvrtc_log(cache, src_copy):
    path = src_copy / "decode_sm80.cu"
    lines = path.read_text().splitlines()
    lines.append("this is not C++ at all;")
    path.write_text("\n".join(lines) + "\n")
    kernels.sources_hash.cache_clear()
    with pytest.raises(RuntimeError, match=r"NVRTC failed to compile decode_sm80.cu for sm_80") as info:
        kernels.compile_source("decode_sm80.cu", "sm_80", {"MLA_FP16": 0})
    msg = str(info.value)
    assert f"decode_sm80.cu({len(lines)}): error" in msg, msg
    assert "MLA_FP16" in msg                      # the defines are reported too
    assert not list(cache.glob("*.cubin")) if cache.exists() else True   # nothing cached


def test_header_error_names_the_header(cache, src_copy):
    header = src_copy / "common" / "params.cuh"
    header.write_text(header.read_text().replace("int num_parts;\n};", "int num_parts\n};", 1))
    kernels.sources_hash.cache_clear()
    with pytest.raises(RuntimeError, match="NVRTC failed to compile metadata.cu") as info:
        kernels.compile_source("metadata.cu", "sm_80")
    assert "params.cuh" in str(info.value) and "error" in str(info.value)


@pytest.mark.parametrize("rows,page_size,want", [(128, 64, "decode_sm90_seesaw64.cu"), (128, 128, "decode_sm90_seesaw64.cu"),
                                                 (64, 64, "decode_sm90_seesaw.cu"), (64, 32, "decode_sm90_seesaw.cu"),
                                                 (128, 16, "decode_sm90.cu"), (128, 1, "decode_sm80.cu"),
                                                 (16, 64, "decode_sm90_narrow.cu"), (32, 16, "decode_sm90_narrow.cu"),
                                                 (16, 32, "decode_sm90_narrow.cu"), (32, 32, "decode_sm90_seesaw.cu"),
                                                 (32, 64, "decode_sm90_narrow.cu")])
def test_launched_file_on_hopper(rows, page_size, want):
    """The kernel a Hopper plan runs: the 64-token seesaw needs pages of 64 or more (a tile from
    one page), the 32-token one pages of 32 or more (one copy a 32-token tile), every TMA kernel
    pages of 16 or more; 32 rows on pages of 32 take the 32-token seesaw (the narrow one is slow
    there)."""
    from cupymla import api
    assert api.launched_file(decode_config(rows, (9, 0)), page_size) == want


def test_extra_defines(monkeypatch):
    """CUPYMLA_DEFINES: "file:NAME=value" items for that file, bare items for every file."""
    monkeypatch.setenv("CUPYMLA_DEFINES", "decode_sm90_seesaw.cu:MLA_Q_REGS=12,metadata.cu:FIXED_OVERHEAD=2,"
                                          "MLA_X,decode_sm90_seesaw.cu:MLA_MAX_SLACK=0.0f")
    assert kernels.extra_defines("decode_sm90_seesaw.cu") == {"MLA_Q_REGS": "12", "MLA_X": "1",
                                                              "MLA_MAX_SLACK": "0.0f"}
    assert kernels.extra_defines("metadata.cu") == {"FIXED_OVERHEAD": "2", "MLA_X": "1"}
    monkeypatch.delenv("CUPYMLA_DEFINES")
    assert kernels.extra_defines("decode_sm90.cu") == {}
