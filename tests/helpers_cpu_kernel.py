"""The fused C++ AOSM kernel for the tests that must run it (``from helpers_cpu_kernel import
cpu_kernel_module`` makes the fixture available in a test module)."""
import os
import shutil
from types import ModuleType

import pytest

from xclip_pl.model.similarity.backends import cpu_extension


def require_cpu_kernel() -> ModuleType:
    """The fused C++ AOSM kernel (:mod:`xclip_pl.model.similarity.backends.cpu_extension`), or the end of
    the calling test.

    A kernel that does not build is a failure on CI (``CI=true``, set by CI services) and wherever a C++
    compiler is installed, and a skip naming the build error elsewhere: never a silent torch-vs-torch pass.
    """
    module = cpu_extension.load()
    if module is not None:
        return module
    reason = f"the fused CPU kernel did not build: {cpu_extension.build_error()}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the kernel must build on CI)")
    if shutil.which("c++") or shutil.which("g++"):
        pytest.fail(f"{reason} (a C++ compiler is installed, so it should have)")
    pytest.skip(f"{reason} (no C++ compiler)")


@pytest.fixture(scope="session")
def cpu_kernel_module() -> ModuleType:
    """:func:`require_cpu_kernel` as a fixture."""
    return require_cpu_kernel()
