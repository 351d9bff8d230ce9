"""Similarity backends registered by name, and the choice of one from the user's ``kernel`` setting.

``SIMILARITY_BACKENDS`` maps a name to a :class:`SimilarityBackend`: ``torch`` (tensor ops, any device,
gradients: the readable reference), ``cpu`` (the fused C++ kernel) and ``triton`` (the Triton kernels
on CUDA). :func:`select_backend` maps ``kernel`` = ``auto`` | ``torch`` | ``fused`` to one of them by
device, dtype and grad mode.
"""
from __future__ import annotations

from typing import Literal

import torch

from xclip_pl.model.similarity.backends.base import Mixes, SimilarityBackend
from xclip_pl.model.similarity.backends.cpu import CpuKernelBackend
from xclip_pl.model.similarity.backends.torch_reference import TorchBackend
from xclip_pl.model.similarity.backends.triton import TritonBackend

#: The user-facing AOSM implementation setting (``model.eval_kernel``): ``torch`` = tensor ops;
#: ``fused`` = the C++ kernel on CPU, the Triton kernels on CUDA, or an error; ``auto`` = the C++ kernel
#: on CPU without gradients where it builds, tensor ops elsewhere.
Kernel = Literal["auto", "torch", "fused"]

SIMILARITY_BACKENDS: dict[str, SimilarityBackend] = {
    backend.name: backend for backend in (TorchBackend(), CpuKernelBackend(), TritonBackend())
}


def select_backend(kernel: Kernel, device: torch.device, dtype: torch.dtype, needs_grad: bool) -> SimilarityBackend:
    """The backend that runs ``kernel`` for features on ``device`` of ``dtype``.

    ``torch`` always gives ``torch``. ``auto`` gives ``cpu`` on CPU without gradients for fp32 / half
    features when the kernel builds (else ``torch``, the build failure logged once) and ``torch``
    elsewhere: the Triton kernels have not been timed on a GPU yet. ``fused`` gives ``cpu`` on CPU and
    ``triton`` on CUDA, and raises where that cannot run (gradients, float64, other devices, no
    compiler or no Triton).
    """
    if kernel not in ("auto", "torch", "fused"):
        raise ValueError(f"kernel must be 'auto', 'torch' or 'fused', got {kernel!r}")
    reference = SIMILARITY_BACKENDS["torch"]
    if kernel == "torch" or (kernel == "auto" and (device.type != "cpu" or needs_grad or dtype == torch.float64)):
        return reference
    if needs_grad or device.type not in ("cpu", "cuda"):
        raise ValueError("kernel='fused' runs on CPU or CUDA features without gradients (wrap the call in "
                         "torch.no_grad()); use kernel='auto' or 'torch' elsewhere")
    if dtype == torch.float64:
        raise ValueError("kernel='fused' takes float32, bfloat16 or float16 features, not float64")
    backend = SIMILARITY_BACKENDS["triton" if device.type == "cuda" else "cpu"]
    reason = backend.unavailable_reason()
    if reason is None:
        return backend
    if kernel == "fused":
        raise RuntimeError(reason)
    return reference


__all__ = ["SIMILARITY_BACKENDS", "Kernel", "Mixes", "SimilarityBackend", "select_backend", "CpuKernelBackend",
           "TorchBackend", "TritonBackend"]
