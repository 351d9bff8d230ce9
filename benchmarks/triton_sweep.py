"""Launch-configuration sweep of the Triton AOSM kernels (``kernel="fused"`` on CUDA) on a GPU.

For each case it times ``MultiGrainedSimilarity.blockwise`` with the Triton kernels under several tile
sizes, warp counts and block budgets, next to the torch path (eager) in the same process, and checks
each result against the torch path. It also prints the registers / spills / shared memory of each
kernel as compiled for this GPU. Use it to choose ``triton_kernel.TILE_ELEMENTS`` / ``LEVEL1_WARPS``
/ ``AXIS_WARPS`` and the default CUDA block; ``benchmarks/similarity.py --kernel fused`` then gives the
figures against the reference loop.

Usage (GPU)::

    python benchmarks/triton_sweep.py --sizes 1000x1000@12/32,4917x4917@64/64
    python benchmarks/triton_sweep.py --tiles 4096,8192 --level1-warps 4,8 --budgets-mb 512,2048
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from similarity import DTYPES, LOGIT_SCALE, Case, make_head, make_inputs

from xclip_pl.model.similarity import SIMILARITY_BACKENDS, block_sizes, default_block_elements
from xclip_pl.model.similarity.backends import triton_kernels as triton_kernel


def _time(fn, runs: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (and compilation of this configuration)
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.3f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000x1000@12/32,4917x4917@64/64")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--tiles", default="4096,8192,16384", help="TILE_ELEMENTS values")
    parser.add_argument("--level1-warps", default="4,8")
    parser.add_argument("--axis-warps", default="4")
    parser.add_argument("--budgets-mb", default="default", help="block budgets in MiB of frame-word scores, or 'default'")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="skip the torch-path reference timing")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("triton_sweep.py needs a CUDA GPU")
    dtype = DTYPES[args.dtype]
    print(f"\n{time.strftime('%Y-%m-%d')}, GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {triton_kernel.triton.__version__}, {args.dtype}\n")
    major, minor = torch.cuda.get_device_capability()
    for spec in args.sizes.split(","):
        case = Case.parse(spec)
        usage = triton_kernel.compile_for_gpu(case.words, case.frames, case.videos, dtype, capability=10 * major + minor)
        print(f"{case}: " + "; ".join(f"{k}: {v['registers']} regs, {v['local']} B spilled, {v['shared']} B shared, "
                                      f"{v['warps']} warps" for k, v in usage.items()))
    print("\n| case | configuration | blocks | time | peak memory | max abs diff vs torch path |")
    print("|---|---|---|---|---|---|")
    for spec in args.sizes.split(","):
        case = Case.parse(spec)
        text, video = make_inputs(case, "cuda", dtype)
        head = make_head(case, "cuda")
        scale = torch.tensor(LOGIT_SCALE, device="cuda")
        want = None

        def blocks(budget: str, fused: bool) -> tuple[int, int]:
            backend = SIMILARITY_BACKENDS["triton" if fused else "torch"]
            elements = (default_block_elements(text.word_emb, fused) if budget == "default"
                        else int(float(budget) * 2**20) // backend.bytes_per_element(dtype, head.mask_padding))
            return block_sizes(case.texts, case.videos, case.words, case.frames, elements)

        with torch.no_grad():
            if not args.no_torch:
                ta, tb = blocks("default", False)
                torch.cuda.reset_peak_memory_stats()
                t, want = _time(lambda: head.blockwise(text, video, scale, ta, tb, kernel="torch"), args.runs)
                print(f"| {case} | torch path (eager) | {ta}x{tb} | {_fmt(t)} | "
                      f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB | - |", flush=True)
            for budget in args.budgets_mb.split(","):
                ta, tb = blocks(budget, True)
                for tile in (int(x) for x in args.tiles.split(",")):
                    for l1 in (int(x) for x in args.level1_warps.split(",")):
                        for ax in (int(x) for x in args.axis_warps.split(",")):
                            triton_kernel.TILE_ELEMENTS, triton_kernel.LEVEL1_WARPS, triton_kernel.AXIS_WARPS = tile, l1, ax
                            torch.cuda.reset_peak_memory_stats()
                            t, got = _time(lambda: head.blockwise(text, video, scale, ta, tb, kernel="fused"), args.runs)
                            diff = "-" if want is None else f"{(got - want).abs().max().item():.2e}"
                            print(f"| {case} | tile {tile}, level-1 warps {l1}, axis warps {ax}, budget {budget} | "
                                  f"{ta}x{tb} | {_fmt(t)} | {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB | {diff} |",
                                  flush=True)
        del text, video, want
        torch.cuda.empty_cache()
    print(f"\ntime: median of {args.runs} runs after one warm-up run; peak: torch.cuda.max_memory_allocated")


if __name__ == "__main__":
    main()
