"""Compiling and loading the CUDA sources in ``cuda_src/``.

Every kernel is compiled by NVRTC (through ``cupy.cuda.nvrtc``, which needs no GPU) into a
cubin for one architecture, cached on disk under a key that hashes the sources, the options
and the NVRTC version, and loaded once per device with ``cupy.RawModule``. We compile
ourselves rather than through ``RawModule(code=...)`` so that the header files are part of
the key, the ``-arch`` is ours alone, and ``python -m cupymla compile`` can build and report
every variant on a machine without a GPU.

The kernel for your GPU:
* ``cuda_src/decode_sm90_seesaw64.cu``: Hopper (compute capability 9.0), more than 64 query rows
  per kv head, pages of 64 tokens or more.
* ``cuda_src/decode_sm90_seesaw.cu``: Hopper, 33 to 64 rows, or pages of 32 (or
  CUPYMLA_SM90_SEESAW64=0).
* ``cuda_src/decode_sm90.cu``: Hopper, more than 32 query rows per kv head, pages of 16 (or
  CUPYMLA_SM90_SEESAW=0).
* ``cuda_src/decode_sm90_narrow.cu``: Hopper, at most 32 query rows per kv head (h_q / h_kv <= 32).
* ``cuda_src/decode_sm80.cu``: every other GPU from sm_80 (Ampere) up.
* ``cuda_src/combine.cu``, ``cuda_src/metadata.cu``: all GPUs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

# Shared memory a CTA may opt into, by compute capability (major, minor); the rest of the
# GPUs of a major version are looked up by major. Used to pick variants without a GPU.
_SMEM_OPTIN = {(8, 0): 163 * 1024, (8, 7): 163 * 1024, (9, 0): 227 * 1024, (10, 0): 227 * 1024,
               (10, 3): 227 * 1024, (11, 0): 227 * 1024}
_SMEM_SMALL = 99 * 1024   # sm_86, sm_89, sm_120, sm_121


def smem_optin(cc: tuple[int, int]) -> int:
    return _SMEM_OPTIN.get(tuple(cc), _SMEM_SMALL)


@lru_cache(maxsize=None)
def cuda_src_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "cuda_src", here.parent / "cuda_src"):
        if (candidate / "decode_sm80.cu").is_file():
            return candidate
    raise FileNotFoundError(f"cupymla: kernel sources not found next to {here} (broken install?)")


@lru_cache(maxsize=None)
def sources_hash() -> str:
    """Hash of every source and header: a header edit must invalidate cached binaries."""
    h = hashlib.sha256()
    root = cuda_src_dir()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".cu", ".cuh", ".h"):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- variants

@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """A decode kernel and its tile shape (see the comment at the top of each kernel file).

    ``path`` "sm80" is decode_sm80.cu (any GPU from sm_80). "sm90" is wgmma, compute capability
    9.0 only, 64 tokens a tile and 2 stages: decode_sm90.cu for block_m 64, decode_sm90_narrow.cu
    (transposed products, one warpgroup) for block_m 16 or 32.
    """
    block_m: int
    warps_n: int
    block_n: int
    stages: int
    head_dim: int = 576
    path: str = "sm80"
    variant: str = ""   # "seesaw64": decode_sm90_seesaw64.cu

    @property
    def file(self) -> str:
        if self.path == "sm90" and self.block_m < 64:
            return "decode_sm90_narrow.cu"
        if self.is_seesaw64:
            return "decode_sm90_seesaw64.cu"
        if self.is_seesaw:
            return "decode_sm90_seesaw.cu"
        return f"decode_{self.path}.cu"

    @property
    def is_seesaw(self) -> bool:
        """decode_sm90_seesaw.cu: 64 rows, 32-token tiles in 4 buffers, a producer warpgroup."""
        return self.path == "sm90" and self.block_m == 64 and self.block_n == 32

    @property
    def is_seesaw64(self) -> bool:
        """decode_sm90_seesaw64.cu: 64 rows, 64-token tiles in 2 buffers copied by halves, a producer."""
        return self.path == "sm90" and self.variant == "seesaw64"

    @property
    def partials_16bit(self) -> bool:
        """Whether plans of this kernel store split sequences' partial results in the element type
        (MLA_ACC16; api._partials_16bit, which CUPYMLA_PARTIALS=fp32 overrides): the seesaw
        kernels, where it measured faster (bench/NOTES.md, session 11)."""
        return self.is_seesaw or self.is_seesaw64

    @property
    def threads(self) -> int:
        if self.path == "sm90":
            if self.block_m < 64:   # the narrow kernel: one warpgroup and a producer warp
                return 160
            return 384 if self.is_seesaw or self.is_seesaw64 else 256
        return self.block_m // 16 * self.warps_n * 32

    @property
    def smem_bytes(self) -> int:
        if self.path == "sm90" and self.block_m < 64:
            # struct Smem of decode_sm90_narrow.cu: two k stages + q + P^T + per-warp column
            # max/sum + four mbarriers, padded to 1024 bytes, + 1 KB to align its start.
            raw = (2 * 64 + self.block_m) * self.head_dim * 2 + self.block_m * 64 * 2 + 2 * 4 * self.block_m * 4 + 4 * 8
            return -(-raw // 1024) * 1024 + 1024
        if self.is_seesaw64:
            # struct Smem of decode_sm90_seesaw64.cu: q + two 64-token tiles + P (d = 512 only: 64 x
            # 64 a tile; d = 576 keeps it in the tile's rope slice) + row max, two scales, two row
            # sums + 10 mbarriers, padded to 1024, + 1 KB to align its start.
            p_bytes = 16 if self.head_dim > 512 else 2 * 64 * 64 * 2
            raw = 3 * 64 * self.head_dim * 2 + p_bytes + 5 * 64 * 4 + 10 * 8
            return -(-raw // 1024) * 1024 + 1024
        if self.is_seesaw:
            # struct Smem of decode_sm90_seesaw.cu: q + four 32-token tiles + P (d = 512 only: 64 x
            # 32 a tile; d = 576 keeps it in the tile's rope slice) + row max, two scales, two row
            # sums + 10 mbarriers, padded to 1024, + 1 KB to align its start.
            p_bytes = 16 if self.head_dim > 512 else self.stages * 64 * self.block_n * 2
            raw = (64 + self.stages * self.block_n) * self.head_dim * 2 + p_bytes + 5 * 64 * 4 + 10 * 8
            return -(-raw // 1024) * 1024 + 1024
        if self.path == "sm90":
            # struct Smem of decode_sm90.cu: q + two k stages + p (64 x 64) + row max/sum exchange
            # + two mbarriers, padded to its 1024-byte alignment, + 1 KB to align its start.
            raw = 3 * 64 * self.head_dim * 2 + 64 * 64 * 2 + 4 * 64 * 4 + 2 * 8
            return -(-raw // 1024) * 1024 + 1024
        # struct Smem of decode_sm80.cu: q, k stages, fp32 scores, two tiles of row addresses.
        row = (self.head_dim + 8) * 2
        return ((self.block_m + self.stages * self.block_n) * row + self.block_m * (self.block_n + 4) * 4
                + 2 * self.block_n * 8)

    def defines(self) -> dict[str, int]:
        if self.path == "sm90":
            if self.block_m < 64:
                return {"MLA_HEAD_DIM": self.head_dim, "MLA_BLOCK_M": self.block_m}
            return {"MLA_HEAD_DIM": self.head_dim}
        return {"MLA_HEAD_DIM": self.head_dim, "MLA_BLOCK_M": self.block_m, "MLA_WARPS_N": self.warps_n,
                "MLA_BLOCK_N": self.block_n, "MLA_STAGES": self.stages}


SM90 = (9, 0)


def extra_defines(file: str) -> dict[str, str]:
    """Tuning knobs for kernel development, from the environment: CUPYMLA_DEFINES="file.cu:NAME=1,..."
    adds -DNAME=1 to that file's decode kernel (e.g. to compare variants in one benchmark run).
    get_mla_metadata asks on every call: the parse is cached per value of the variable."""
    return dict(_parse_defines(os.environ.get("CUPYMLA_DEFINES", ""), file))


@lru_cache(maxsize=64)
def _parse_defines(spec: str, file: str) -> tuple:
    out = {}
    for item in filter(None, spec.split(",")):
        target, _, define = item.rpartition(":")
        name, _, value = define.partition("=")
        if target in ("", file) and name:
            out[name.strip()] = value or "1"
    return tuple(out.items())



def decode_config(rows: int, cc: tuple[int, int], head_dim: int = 576, path: str | None = None) -> DecodeConfig:
    """The kernel and tile shape for `rows` query rows per kv head on a GPU of compute capability `cc`.

    Hopper (cc 9.0) takes a wgmma kernel: the narrow one for at most 32 rows (unless the
    environment sets CUPYMLA_SM90_NARROW=0, to compare), the 32-token seesaw for 33 to 64 rows,
    else the 64-token seesaw (the API takes the 32-token one for pages of 32, and decode_sm90.cu
    for pages of 16 with either; to compare,
    CUPYMLA_SM90_SEESAW64=0 takes the 32-token seesaw and CUPYMLA_SM90_SEESAW=0 decode_sm90.cu
    for every page size; CUPYMLA_SM90_SEESAW64=2 gives the 64-token one 33 to 64 rows too). Elsewhere, few
    rows (small h_q per kv head, the memory-bound case) get a short m tile so the tensor cores
    do not multiply padding; GPUs with ~100 KB of shared memory per CTA get one stage. ``path``
    (or the environment variable CUPYMLA_DECODE_PATH) forces "sm80" or "sm90", e.g. to test the
    portable path on Hopper.
    """
    path = path or os.environ.get("CUPYMLA_DECODE_PATH") or ("sm90" if tuple(cc) == SM90 else "sm80")
    if path == "sm90":
        if tuple(cc) != SM90:
            raise ValueError(f"decode path sm90 needs compute capability 9.0, got {cc}")
        if rows <= 32 and os.environ.get("CUPYMLA_SM90_NARROW", "1") != "0":
            return DecodeConfig(16 if rows <= 16 else 32, 1, 64, 2, head_dim, "sm90")
        if os.environ.get("CUPYMLA_SM90_SEESAW", "1") != "0":
            # One m tile (rows <= 64: s_q 4 h_q 16, h_q 64) stays on the 32-token seesaw, whose
            # first q comes in one bulk copy: the 64-token one ran b4 s_q4 h16 at 43.7 us against
            # 39.6 and b128 s_q4 h16 8K at 339.2 against 335.3 (H200, bench/NOTES.md, session 8).
            seesaw64 = os.environ.get("CUPYMLA_SM90_SEESAW64", "1")
            if seesaw64 != "0" and (rows > 64 or seesaw64 == "2"):
                return DecodeConfig(64, 2, 64, 2, head_dim, "sm90", "seesaw64")
            return DecodeConfig(64, 2, 32, 4, head_dim, "sm90")
        return DecodeConfig(64, 2, 64, 2, head_dim, "sm90")
    if path != "sm80":
        raise ValueError(f"CUPYMLA_DECODE_PATH: expected 'sm80' or 'sm90', got {path!r}")
    big = smem_optin(cc) >= 160 * 1024
    if rows <= 16:
        cfg = DecodeConfig(16, 4, 32, 2, head_dim)
    elif rows <= 32:
        cfg = DecodeConfig(32, 4, 32, 2 if big else 1, head_dim)
    else:
        cfg = DecodeConfig(64, 2, 32, 2, head_dim) if big else DecodeConfig(64, 2, 16, 1, head_dim)
    return cfg


def all_decode_configs(cc: tuple[int, int]) -> list[DecodeConfig]:
    """Every variant `decode_config` can return on `cc` (what `compile` builds)."""
    out = []
    paths = ["sm80", "sm90"] if tuple(cc) == SM90 else ["sm80"]
    for path in paths:
        for head_dim in (576, 512):
            for rows in (16, 32, 64, 128):
                cfg = decode_config(rows, cc, head_dim, path)
                if cfg not in out:
                    out.append(cfg)
            if path == "sm90":   # the 32-token seesaw (pages of 32) and decode_sm90.cu (pages of 16)
                for cfg in (DecodeConfig(64, 2, 32, 4, head_dim, "sm90"), DecodeConfig(64, 2, 64, 2, head_dim, "sm90")):
                    if cfg not in out:
                        out.append(cfg)
    return out


def ctas_per_sm(cfg: DecodeConfig, smem_per_sm: int, regs_per_thread: int = 255) -> int:
    by_smem = smem_per_sm // (cfg.smem_bytes + 1024)          # 1 KB per CTA is reserved
    by_regs = 65536 // (((regs_per_thread + 7) // 8 * 8) * cfg.threads)
    return max(1, min(by_smem, by_regs))


# --------------------------------------------------------------------------- compiling

def arch_name(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def _nvrtc():
    from cupy.cuda import nvrtc
    return nvrtc


def nvrtc_version() -> tuple[int, int]:
    return tuple(_nvrtc().getVersion())


def cache_dir() -> Path:
    env = os.environ.get("CUPYMLA_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cupymla"


@dataclasses.dataclass
class Compiled:
    name: str          # kernel function name
    file: str
    arch: str
    defines: dict
    binary: bytes      # cubin (or PTX when NVRTC does not know the GPU's arch)
    is_ptx: bool
    log: str
    registers: int = -1
    spill_bytes: int = 0
    stack_bytes: int = 0


def _parse_ptxas(log: str, c: Compiled) -> None:
    m = re.search(r"Used (\d+) registers", log)
    if m:
        c.registers = int(m.group(1))
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if m:
        c.stack_bytes = int(m.group(1))
        c.spill_bytes = int(m.group(2)) + int(m.group(3))


KERNEL_NAMES = {"decode_sm80.cu": "mla_decode_sm80", "decode_sm90.cu": "mla_decode_sm90",
                "decode_sm90_narrow.cu": "mla_decode_sm90_narrow", "decode_sm90_seesaw.cu": "mla_decode_sm90_seesaw",
                "decode_sm90_seesaw64.cu": "mla_decode_sm90_seesaw64",
                "combine.cu": "mla_combine", "metadata.cu": "mla_metadata"}


def compile_source(file: str, arch: str, defines: dict | None = None, *, use_cache: bool = True) -> Compiled:
    """Compile ``cuda_src/<file>`` for ``arch`` (e.g. "sm_90a", or "compute_90" for PTX)."""
    nvrtc = _nvrtc()
    defines = dict(sorted((defines or {}).items()))
    options = [f"-arch={arch}", "--std=c++17", f"-I{cuda_src_dir()}", "-default-device",
               "-Xptxas=-v", "-lineinfo"] + [f"-D{k}={v}" for k, v in defines.items()]
    is_ptx = arch.startswith("compute_")
    key = hashlib.sha256(repr((file, options[:2] + options[3:], sources_hash(), nvrtc_version())).encode()).hexdigest()[:24]
    path = cache_dir() / f"{Path(file).stem}-{arch}-{key}.{'ptx' if is_ptx else 'cubin'}"
    log_path = path.with_suffix(".log")
    name = KERNEL_NAMES[file]
    if use_cache and path.is_file() and log_path.is_file():
        c = Compiled(name, file, arch, defines, path.read_bytes(), is_ptx, log_path.read_text())
        _parse_ptxas(c.log, c)
        return c

    src = (cuda_src_dir() / file).read_text()
    prog = nvrtc.createProgram(src, file, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except Exception as exc:
            raise RuntimeError(f"NVRTC failed to compile {file} for {arch} {defines}:\n"
                               f"{nvrtc.getProgramLog(prog)}") from exc
        log = nvrtc.getProgramLog(prog).replace("\x00", "")
        if is_ptx:
            ptx = nvrtc.getPTX(prog)
            binary = ptx if isinstance(ptx, bytes) else ptx.encode()
        else:
            binary = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    c = Compiled(name, file, arch, defines, binary, is_ptx, log)
    _parse_ptxas(log, c)
    if use_cache:
        _atomic_write(path, binary)
        _atomic_write(log_path, log.encode())
    return c


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so concurrent processes never read half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache is not an error: we just compile again next time


# --------------------------------------------------------------------------- loading

@lru_cache(maxsize=None)
def device_info(device_id: int) -> dict:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(device_id)
    return {
        "name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        "cc": (props["major"], props["minor"]),
        "sms": props["multiProcessorCount"],
        "smem_optin": props["sharedMemPerBlockOptin"],
        "smem_per_sm": props["sharedMemPerMultiprocessor"],
    }


def _target_arch(cc: tuple[int, int], file: str) -> str:
    """The real arch if this NVRTC knows it, else PTX of the newest arch it knows below it."""
    if file.startswith("decode_sm90"):
        return "sm_90a"   # wgmma exists only in the arch-specific target
    supported = [a for a in _nvrtc().getSupportedArchs() if a <= cc[0] * 10 + cc[1]]
    want = cc[0] * 10 + cc[1]
    if want in _nvrtc().getSupportedArchs():
        return arch_name(cc)
    if not supported:
        raise RuntimeError(f"cupymla: NVRTC {nvrtc_version()} cannot target compute capability {cc}")
    return f"compute_{max(supported)}"


_functions: dict = {}
_modules: dict = {}
_lock = threading.Lock()


def get_function(device_id: int, file: str, defines: dict | None = None, smem_bytes: int = 0):
    """The loaded kernel of ``file`` with ``defines`` on ``device_id`` (compiled on first use)."""
    key = (device_id, file, tuple(sorted((defines or {}).items())))
    fn = _functions.get(key)
    if fn is not None:
        return fn
    import cupy
    with _lock:
        fn = _functions.get(key)
        if fn is None:
            cc = device_info(device_id)["cc"]
            compiled = compile_source(file, _target_arch(cc, file), defines)
            with cupy.cuda.Device(device_id):
                path = _loadable_path(compiled)
                module = cupy.RawModule(path=str(path))
                fn = module.get_function(compiled.name)
                if smem_bytes > 48 * 1024:
                    fn.max_dynamic_shared_size_bytes = smem_bytes
            _modules[key] = module  # keep the module loaded as long as the function is cached
            _functions[key] = fn
    return fn


def _loadable_path(c: Compiled) -> Path:
    key = hashlib.sha256(c.binary).hexdigest()[:24]
    path = cache_dir() / f"load-{key}.{'ptx' if c.is_ptx else 'cubin'}"
    if not path.is_file():
        _atomic_write(path, c.binary)
    if not path.is_file():  # unwritable cache: fall back to a private temporary file
        fd, tmp = tempfile.mkstemp(suffix=path.suffix)
        with os.fdopen(fd, "wb") as f:
            f.write(c.binary)
        path = Path(tmp)
    return path


# --------------------------------------------------------------------------- `python -m cupymla compile`

def _variants_for(arch: str):
    """(file, defines) of every kernel variant that can run on ``arch``."""
    digits = re.sub(r"\D", "", arch)
    cc = (int(digits[:-1]), int(digits[-1]))
    for fp16 in (0, 1):
        for cfg in all_decode_configs(cc):
            # 16-bit partials (MLA_ACC16, api._partials_16bit): the seesaw kernels use them, the
            # portable kernel when it stands in for a seesaw plan (no tensor map), the others not.
            acc16 = (1,) if cfg.partials_16bit else (0, 1) if cfg.path == "sm80" else (0,)
            for a in acc16:
                extra = {"MLA_ACC16": 1} if a else {}
                yield cfg, {"MLA_FP16": fp16, **extra, **cfg.defines()}, cc
            if cfg.file == "decode_sm90.cu":   # pages of 32: tiles as two sub-tiles (api._DecodePlan)
                yield cfg, {"MLA_FP16": fp16, **cfg.defines(), "MLA_KV_SUB_ROWS": 32}, cc
        for shape in ({"MLA_COMBINE_WIDE": 0}, {"MLA_COMBINE_WIDE": 1, "MLA_COMBINE_COLS": 128},
                      {"MLA_COMBINE_WIDE": 1, "MLA_COMBINE_COLS": 256}):   # api._combine_shape
            yield "combine.cu", {"MLA_FP16": fp16, **shape}, cc
            yield "combine.cu", {"MLA_FP16": fp16, **shape, "MLA_ACC16": 1}, cc
    yield "metadata.cu", {}, cc


def compile_cli(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m cupymla compile",
                                     description="Compile every kernel variant with NVRTC (no GPU needed) "
                                                 "and report registers, shared memory and spills.")
    parser.add_argument("--arch", action="append", default=None,
                        help="target, e.g. sm_80, sm_90a, sm_120 (repeatable; default: sm_80 sm_86 sm_89 sm_90a sm_100 sm_120)")
    parser.add_argument("--no-cache", action="store_true", help="compile even if a cached binary exists")
    args = parser.parse_args(argv)
    archs = args.arch or ["sm_80", "sm_86", "sm_89", "sm_90a", "sm_100", "sm_120"]
    try:
        print(f"NVRTC {'.'.join(map(str, nvrtc_version()))}, sources {sources_hash()}")
    except Exception as exc:  # noqa: BLE001 - report any loader failure plainly
        print(f"cupymla compile: NVRTC is not available ({exc}). Install with the cuda12 or cuda13 extra.",
              file=sys.stderr)
        return 2
    failures = 0
    for arch in archs:
        for item, defines, cc in _variants_for(arch):
            cfg = item if isinstance(item, DecodeConfig) else None
            file = cfg.file if cfg else item
            label = f"{arch:8s} {file:15s} " + " ".join(f"{k.removeprefix('MLA_').lower()}={v}" for k, v in defines.items())
            try:
                c = compile_source(file, "sm_90a" if cfg and cfg.path == "sm90" else arch, defines,
                                   use_cache=not args.no_cache)
            except RuntimeError as exc:
                print(f"FAIL {label}\n{exc}")
                failures += 1
                continue
            smem, too_big = "", False
            if cfg:
                smem = f" smem={cfg.smem_bytes}B"
                too_big = cfg.smem_bytes > smem_optin(cc)
            # Every kernel here is on the hot path of a decode step: none may spill.
            bad = c.spill_bytes > 0 or c.stack_bytes > 0 or too_big
            status = ("SMEM" if too_big else "SPILL") if bad else "ok"
            print(f"{status:5s} {label:70s} regs={c.registers} spill={c.spill_bytes}B stack={c.stack_bytes}B{smem}")
            failures += bad
    print(f"{failures} failure(s)")
    return 1 if failures else 0
