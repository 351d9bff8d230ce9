"""The fused CPU AOSM kernel (``kernels/aosm_cpu.cpp``): built on first use, or ``None`` when it cannot be.

It is compiled once per machine and checkout with ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``, both
installed with xclip-pl's requirements or the system; about 20 s) into ``$TORCH_EXTENSIONS_DIR``
(default ``~/.cache/torch_extensions``), under a name that includes the CPU's instruction-set flags, so a
cache shared between different machines never runs code built for another CPU, and the source's path, so two
checkouts on one machine do not rebuild each other's kernel in turn.
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


def _build_tag() -> str:
    """Short hash of the CPU's flags (``-march=native`` code is only valid on the CPU it was built for) and of
    the source's path (torch rebuilds a name whose sources moved)."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1((flags + str(SOURCE.resolve())).encode()).hexdigest()[:8]


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


#: A build lock whose build directory has not changed for this long is left over from an interrupted build (a
#: build takes ~20 s on 2 cores).
STALE_LOCK_S = 300.0


def _wait_for_build_lock(name: str, poll_s: float = 1.0) -> None:
    """torch waits forever on the ``lock`` file of a build that was interrupted (Ctrl-C, a killed job). Wait
    here instead while another process's build is alive, and remove the lock once nothing in its build directory
    has changed for ``STALE_LOCK_S`` (the build died), so that this process builds instead of hanging."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        directory = Path(_get_build_directory(name, verbose=False))
    except Exception:  # private torch API: leave it to torch
        return
    lock, announced = directory / "lock", False
    while lock.exists():
        try:
            idle_s = time.time() - max(path.stat().st_mtime for path in directory.iterdir())
        except (OSError, ValueError):  # the lock went away while we looked, or the directory is unreadable
            return  # leave it to torch
        if idle_s > STALE_LOCK_S:
            log.warning("removing a stale build lock left by an interrupted build: %s", lock)
            lock.unlink(missing_ok=True)
            return
        if not announced:
            log.warning("waiting for another process's build of the fused CPU AOSM kernel (%s); if none is "
                        "running, it is removed after %.0f s without changes, or delete it yourself", lock,
                        STALE_LOCK_S)
            announced = True
        time.sleep(poll_s)


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
            name = f"xclip_pl_aosm_cpu_{_build_tag()}"
            _wait_for_build_lock(name)
            log.info("loading the fused CPU AOSM kernel (built on first use: ~20 s, once per machine and checkout)")
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
