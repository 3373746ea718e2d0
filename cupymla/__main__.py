"""Command line: ``python -m cupymla info|compile|bench|check``.

Only the standard library is imported up front, so ``--help`` is instant; each
subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "info": "versions of cupymla, NumPy, CuPy and NVRTC, and the visible GPUs",
    "compile": "compile every kernel variant with NVRTC (no GPU needed), e.g. "
               "--arch sm_80 --arch sm_90a",
    "bench": "benchmark against FlashMLA's numbers and PyTorch (CPU mode without a GPU)",
    "check": "quick correctness check of the kernels against the NumPy reference",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cupymla",
        description="cupymla: paged MLA decode kernels compiled at run time by NVRTC.",
        epilog="Run 'python -m cupymla COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text)
    return p


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("cupymla")
    except Exception:
        pass
    try:
        import cupymla
        return str(getattr(cupymla, "__version__", "unknown"))
    except Exception:
        return "unknown"


def _pkg_version(name: str):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def cmd_info(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m cupymla info", description=COMMANDS["info"])
    p.add_argument("--json", action="store_true", help="print a JSON object instead")
    args = p.parse_args(argv)

    import platform
    from pathlib import Path

    info = {"cupymla": _version(), "python": platform.python_version()}
    try:
        import cupymla
        pkg = Path(cupymla.__file__).parent
        src = pkg / "cuda_src"
        if not src.is_dir():
            src = pkg.parent / "cuda_src"
        info["package"] = str(pkg)
        info["cuda_src"] = str(src) if src.is_dir() else "NOT FOUND"
    except Exception as e:
        info["package"] = f"import failed: {type(e).__name__}: {e}"
    try:
        import numpy
        info["numpy"] = numpy.__version__
    except Exception as e:
        info["numpy"] = f"not importable ({e})"
    info["ml_dtypes"] = _pkg_version("ml_dtypes") or "not installed"
    for name in ("torch", "jax", "flash_mla"):
        v = _pkg_version(name)
        if v:
            info[name] = v

    gpus = []
    try:
        import cupy as cp
        info["cupy"] = cp.__version__
        try:
            info["nvrtc"] = ".".join(str(x) for x in cp.cuda.nvrtc.getVersion())
        except Exception as e:
            info["nvrtc"] = f"not loadable ({type(e).__name__}: {e})"
        try:
            rv = cp.cuda.runtime.runtimeGetVersion()
            info["cuda_runtime"] = f"{rv // 1000}.{rv % 1000 // 10}"
        except Exception as e:
            info["cuda_runtime"] = f"not loadable ({type(e).__name__}: {e})"
        try:
            dv = cp.cuda.runtime.driverGetVersion()
            info["cuda_driver"] = f"{dv // 1000}.{dv % 1000 // 10}" if dv else "none"
        except Exception as e:
            info["cuda_driver"] = f"none ({type(e).__name__})"
        try:
            n = cp.cuda.runtime.getDeviceCount()
            for i in range(n):
                pr = cp.cuda.runtime.getDeviceProperties(i)
                name = pr["name"].decode() if isinstance(pr["name"], bytes) else str(pr["name"])
                gpus.append({
                    "index": i, "name": name, "sm": f"sm_{pr['major']}{pr['minor']}",
                    "compute_capability": f"{pr['major']}.{pr['minor']}",
                    "sms": pr["multiProcessorCount"],
                    "memory_gib": round(pr["totalGlobalMem"] / 2**30, 1),
                })
            if not gpus:
                info["gpu"] = "no GPU: getDeviceCount() returned 0"
        except Exception as e:
            info["gpu"] = f"no GPU visible: {type(e).__name__}: {e}"
    except Exception as e:
        info["cupy"] = (f"not importable ({type(e).__name__}: {e}); "
                        "install the cuda12 or cuda13 extra")
        info["gpu"] = "no GPU usable: CuPy is not importable"
    info["gpus"] = gpus

    if args.json:
        import json
        print(json.dumps(info, indent=1))
        return 0
    for k, v in info.items():
        if k == "gpus":
            continue
        print(f"{k:13s} {v}")
    for g in gpus:
        print(f"GPU {g['index']}:        {g['name']}, {g['sm']} (compute capability "
              f"{g['compute_capability']}), {g['sms']} SMs, {g['memory_gib']} GiB")
    if not gpus:
        print("No GPU: the NumPy reference (cupymla.reference), the scheduler twin, "
              "'python -m cupymla compile' and the benchmark's CPU mode still work.")
    return 0


def cmd_compile(argv) -> int:
    from cupymla.kernels import compile_cli
    return compile_cli(argv)


def cmd_bench(argv) -> int:
    from cupymla.benchmark import main
    return main(argv)


def cmd_check(argv) -> int:
    from cupymla.selfcheck import main
    return main(argv)


HANDLERS = {"info": cmd_info, "compile": cmd_compile, "bench": cmd_bench, "check": cmd_check}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    # The subcommand's own options go to its handler untouched, so dispatch by hand and
    # use argparse for the top level only (help, --version, unknown commands).
    if not argv or argv[0].startswith("-"):
        args = parser.parse_args(argv)
        if args.version:
            print(f"cupymla {_version()}")
            return 0
        parser.print_help()
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in HANDLERS:
        parser.error(f"unknown command {cmd!r} (choose from {', '.join(HANDLERS)})")
    rc = HANDLERS[cmd](rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
