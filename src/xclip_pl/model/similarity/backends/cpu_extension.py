"""The fused CPU AOSM kernel (``kernels/aosm_cpu.cpp``): built on first use, or ``None`` when it cannot be.

It is compiled once per machine with ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``, both
installed with xclip-pl's requirements or the system; about 20 s) into ``$TORCH_EXTENSIONS_DIR``
(default ``~/.cache/torch_extensions``), under a name that includes the CPU's instruction-set flags, so a
cache shared between different machines never runs code built for another CPU.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "aosm_cpu.cpp"
_lock = threading.Lock()
_state: dict[str, object] = {}


def _cpu_tag() -> str:
    """Short hash of the CPU's flags (``-march=native`` code is only valid on the CPU it was built for)."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def _ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip package's binary is not on it when the virtual
    environment is not activated (``.venv/bin/xclip-pl ...``), so add its directory."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


#: A build lock older than this is left over from an interrupted build (a build takes ~20 s).
STALE_LOCK_S = 600


def _clear_stale_lock(name: str) -> None:
    """torch waits forever on the ``lock`` file of a build that was interrupted (Ctrl-C, a killed
    job); remove one that is clearly stale so that the next evaluation rebuilds instead of hanging."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            log.warning("removing a stale build lock left by an interrupted build: %s", lock)
            lock.unlink()
    except Exception:  # private torch API or file system trouble: leave it to torch
        pass


def build_error() -> str | None:
    """Why the kernel could not be built, after a failed :func:`load` (else ``None``)."""
    err = _state.get("error")
    return None if err is None else str(err)


def load(verbose: bool = False) -> ModuleType | None:
    """The compiled kernel module, building it on first use; ``None`` (with the reason kept for
    :func:`build_error` and logged once) where no compiler or ``ninja`` is available."""
    with _lock:
        if "module" in _state:
            return _state["module"]  # type: ignore[return-value]
        module = None
        try:
            from torch.utils.cpp_extension import load as load_extension

            _ninja_on_path()
            name = f"xclip_pl_aosm_cpu_{_cpu_tag()}"
            _clear_stale_lock(name)
            log.info("loading the fused CPU AOSM kernel (built on first use: ~20 s, once per machine)")
            module = load_extension(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-finite-math-only"],
                extra_ldflags=["-fopenmp"],
                verbose=verbose,
            )
        except Exception as exc:  # no compiler, no ninja, unsupported platform: callers fall back to torch
            _state["error"] = _summary(exc)
            log.warning("the fused CPU AOSM kernel is unavailable (%s); using the torch implementation", _state["error"])
        _state["module"] = module
        return module


def _summary(exc: Exception) -> str:
    """One line for a failed build: the compiler's first ``error:`` line if there is one, else the last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    pick = errors[0] if errors else (lines[-1] if lines else "")
    return f"{type(exc).__name__}: {pick}"
