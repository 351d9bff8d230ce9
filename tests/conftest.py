"""Test-wide settings: offline, no W&B traffic, small thread pools, deterministic seeds."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

# Without a GPU the Triton kernels run in Triton's interpreter (tests/test_triton_kernel.py); the choice
# is read when triton is first imported, so it is made here, before any test imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    slow = os.environ.get("XCLIP_SLOW") == "1"
    gpu = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not slow:
            item.add_marker(pytest.mark.skip(reason="slow test: set XCLIP_SLOW=1"))
        if "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def require_cpu_kernel():
    """The fused C++ AOSM kernel (``xclip_pl.model.cpu_kernel``), or the end of the calling test.

    A kernel that does not build is a failure on CI (``CI=true``, set by CI services) and wherever a C++
    compiler is installed, and a skip naming the build error elsewhere: never a silent torch-vs-torch pass.
    """
    import shutil

    from xclip_pl.model import cpu_kernel

    module = cpu_kernel.load()
    if module is not None:
        return module
    reason = f"the fused CPU kernel did not build: {cpu_kernel.build_error()}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the kernel must build on CI)")
    if shutil.which("c++") or shutil.which("g++"):
        pytest.fail(f"{reason} (a C++ compiler is installed, so it should have)")
    pytest.skip(f"{reason} (no C++ compiler)")


@pytest.fixture(scope="session")
def cpu_kernel_module():
    """:func:`require_cpu_kernel` as a fixture."""
    return require_cpu_kernel()
