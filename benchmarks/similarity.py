"""Similarity-engine benchmark: ``MultiGrainedSimilarity.blockwise`` against the reference's evaluation loop.

The baseline is what the reference code does at evaluation (xclip-method.md 10.1): a Python double loop
over 40 x 40 text-block x video-block tiles that computes each tile's four-term logits with the
reference's own formulation (transcribed from ``tests/reference_xclip.py``: ``_loose_similarity``'s four
terms and ``_attenion_over_fine_grained_sim_matrix``, ``word @ W_loc`` and ``sentence @ W_g`` redone for
every tile, softmax over axis 1, permute-matmul mixing), copies each tile to NumPy with ``.cpu().numpy()``
and concatenates. It runs in fp32, as the reference evaluates. The reference's per-tile re-run of the
temporal encoder is *not* included (our engine is given the same precomputed features), so the ratio
is the similarity engine alone. Large cases time the baseline on the first k of the 40 text-block rows
and extrapolate (x 40 / k); the table says so.

Inputs are random L2-normalised features (D = 512, every mask on) and a similarity head whose eight
matrices are identity plus small noise (so no mix is skipped as an identity).

The engine is ``XCLIP.similarity``'s: on CPU by default (``--kernel auto``) the fused C++ AOSM kernel
(built on first use, before timing) with its default 2^23-element blocks; ``--kernel torch`` times the
tensor-op implementation (2^20-element CPU blocks), ``--kernel fused,torch`` both in one run. On CUDA
``--kernel fused`` times the Triton kernels (compile on/off does not apply to them).

Usage::

    python benchmarks/similarity.py                     # CPU: 1000x1000 at 12/32 and 64/64, fp32 and bf16
    python benchmarks/similarity.py --sizes 1000x1000@12/32 --dtypes fp32
    python benchmarks/similarity.py --cpu-large         # CPU: 4917x4917 at 64/64, fp32 (--cpu-large-dtype), bounded memory
    python benchmarks/similarity.py --device cuda       # + 4917x4917 at 64/64; bf16 and fp32; compile off and on

Sizes are ``TEXTSxVIDEOS@FRAMES/WORDS``. Times are medians over ``--runs`` (GPU: after warm-up, with
``torch.cuda.synchronize()``). Peak memory: GPU ``torch.cuda.max_memory_allocated`` above what the
inputs already hold; CPU peak RSS (``VmHWM``, reset after building the inputs) above the resident set then, each
measurement in its own subprocess.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.similarity import MultiGrainedSimilarity, block_sizes, default_block_elements
from xclip_pl.model.temporal import TemporalTransformer, l2_normalize, masked_mean

DIM = 512
LOGIT_SCALE = math.log(100.0)
BASE_WORK = 1000 * 1000 * 12 * 32  # frame-word elements of the 1000 x 1000 12/32 case
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Case:
    texts: int
    videos: int
    frames: int
    words: int

    @classmethod
    def parse(cls, spec: str) -> "Case":
        pair, shape = spec.split("@")
        a, b = pair.lower().split("x")
        f, w = shape.split("/")
        return cls(int(a), int(b), int(f), int(w))

    def __str__(self) -> str:
        return f"{self.texts}x{self.videos} @ {self.frames}/{self.words}"

    @property
    def work(self) -> int:
        return self.texts * self.videos * self.frames * self.words


# ------------------------------------------------------------------------------------------------ inputs
def _unit(shape: tuple[int, ...], generator: torch.Generator, device: str) -> torch.Tensor:
    x = torch.randn(shape, generator=generator, device=device)
    return x.div_(x.norm(dim=-1, keepdim=True))  # in place: no second copy of the big tensors


def make_inputs(case: Case, device: str, dtype: torch.dtype, seed: int = 0) -> tuple[TextFeatures, VideoFeatures]:
    g = torch.Generator(device=device).manual_seed(seed)
    a, b, f, w = case.texts, case.videos, case.frames, case.words
    text = TextFeatures(_unit((a, DIM), g, device), _unit((a, w, DIM), g, device), torch.ones(a, w, dtype=torch.bool, device=device))
    video = VideoFeatures(_unit((b, DIM), g, device), _unit((b, f, DIM), g, device), torch.ones(b, f, dtype=torch.bool, device=device))
    return text.to(dtype=dtype), video.to(dtype=dtype)


def make_head(case: Case, device: str, seed: int = 0) -> MultiGrainedSimilarity:
    head = MultiGrainedSimilarity(DIM, case.words, case.frames).to(device)
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    with torch.no_grad():
        for p in head.parameters():
            p.add_((0.01 * torch.randn(p.shape, generator=g)).to(device))
    return head.eval()


# --------------------------------------------------------------------------------------------- baseline
def reference_tile(head: MultiGrainedSimilarity, sentence_output, word_features, video_output, frame_features, logit_scale):
    """One tile's logits exactly as the reference's ``_loose_similarity`` computes its four terms after the
    temporal encoder (``tests/reference_xclip.py``), including ``W_g`` / ``W_loc`` applied per tile."""
    h = head
    video_sentence_logits = logit_scale * torch.matmul(torch.matmul(sentence_output, h.global_mat_weight), video_output.t())
    video_word_logits = logit_scale * torch.sum(torch.matmul(word_features, video_output.t())
        * torch.matmul(torch.softmax(torch.matmul(word_features, video_output.t()) / 1e-2, dim=1).permute(0, 2, 1), h.word_logit_weight).permute(0, 2, 1), dim=1)
    sentence_frame_logits = logit_scale * torch.sum(torch.matmul(sentence_output, frame_features.permute(0, 2, 1))
        * torch.matmul(torch.softmax(torch.matmul(sentence_output, frame_features.permute(0, 2, 1)) / 1e-2, dim=-1), h.frame_logit_weight), dim=-1).t()
    frame_word_logits = logit_scale * _reference_fine(h, word_features, frame_features)
    return (video_sentence_logits + video_word_logits + sentence_frame_logits + frame_word_logits) / 4


def _reference_fine(h: MultiGrainedSimilarity, word_features, frame_features):
    """The reference's ``_attenion_over_fine_grained_sim_matrix``."""
    bs_video, num_frames, dim_video = frame_features.shape
    bs_text, num_words, dim_text = word_features.shape
    fine_grained_sim_scores = torch.matmul(torch.matmul(word_features.view(-1, dim_text), h.local_mat_weight),
                                           frame_features.view(-1, dim_video).t()).view(bs_text, num_words, bs_video, num_frames)
    word_level_logit = torch.sum(torch.matmul(torch.softmax(fine_grained_sim_scores / 1e-2, dim=1).permute(0, 2, 3, 1), h.word_mat_weight).permute(0, 3, 1, 2) * fine_grained_sim_scores, dim=1)
    frame_level_logit = torch.sum(torch.matmul(torch.softmax(fine_grained_sim_scores / 1e-2, dim=-1), h.frame_mat_weight) * fine_grained_sim_scores, dim=-1)
    sent2frame_logits = torch.sum(torch.matmul(torch.softmax(word_level_logit / 1e-2, dim=-1), h.frame_mat_weight2) * word_level_logit, dim=-1)
    video2word_logits = torch.sum(torch.matmul(torch.softmax(frame_level_logit / 1e-2, dim=1).permute(0, 2, 1), h.word_mat_weight2).permute(0, 2, 1) * frame_level_logit, dim=1)
    return (sent2frame_logits + video2word_logits) / 2


def encode_videos(temporal: TemporalTransformer, raw: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's video side of ``_loose_similarity``: temporal encoder, normalise, masked mean,
    normalise; frames entering AOSM are the normalised raw frames. Returns (video [b, d], frames [b, f, d])."""
    return l2_normalize(masked_mean(l2_normalize(temporal(raw, mask)), mask)), l2_normalize(raw)


def reference_loop(head, text: TextFeatures, video: VideoFeatures, rows: int = 40, blocks: int = 40, cols: int | None = None,
                   temporal: TemporalTransformer | None = None) -> np.ndarray:
    """The reference evaluation loop over ``blocks`` x ``blocks`` tiles, first ``rows`` (x ``cols``) tiles.
    With ``temporal``, every tile re-runs the temporal encoder on its videos' raw frames (``frame_emb``),
    as the reference does; without, the video features are taken as given."""
    a, b = len(text), len(video)
    ta, tb = -(-a // blocks), -(-b // blocks)
    logit_scale = torch.tensor(LOGIT_SCALE, device=text.sentence_emb.device).exp()
    sim = []
    with torch.no_grad():
        for i in range(0, min(a, rows * ta), ta):
            sent, word = text.sentence_emb[i : i + ta].float(), text.word_emb[i : i + ta].float()
            row = []
            for j in range(0, min(b, (cols or blocks) * tb), tb):
                vid, frame = video.video_emb[j : j + tb].float(), video.frame_emb[j : j + tb].float()
                if temporal is not None:
                    vid, frame = encode_videos(temporal, frame, video.frame_mask[j : j + tb])
                tile = reference_tile(head, sent, word, vid, frame, logit_scale)
                row.append(tile.cpu().detach().numpy())
            sim.append(np.concatenate(row, axis=1))
    return np.concatenate(sim, axis=0)


def baseline_rows(case: Case, temporal: bool = False) -> int:
    """Text-block rows of the 40 the baseline runs: all of them up to the 1000 x 1000 12/32 work (a fifth
    of that with the per-tile temporal encoder), proportionally fewer above."""
    budget = BASE_WORK / (5 if temporal else 1)
    return 40 if case.work <= budget else max(1, round(40 * budget / case.work))


def make_temporal(device: str) -> TemporalTransformer:
    torch.manual_seed(2)
    return TemporalTransformer(DIM, 4).to(device).eval()


# -------------------------------------------------------------------------------------------- measuring
def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _maxrss_mib() -> float:
    """Peak resident set since the last :func:`_reset_peak_rss` (Linux ``VmHWM``), else since start."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0), so that building the inputs (fp32 random
    tensors converted to bf16) does not count in the engine's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(job: dict) -> dict:
    """Run one measurement (``engine`` or ``reference``) and return its times, peak memory and check."""
    device, case, dtype = job["device"], Case(**job["case"]), DTYPES[job["dtype"]]
    text, video = make_inputs(case, device, dtype)
    head = make_head(case, device)
    scale = torch.tensor(LOGIT_SCALE, device=device)
    budget = job.get("budget_mb")
    temporal = make_temporal(device) if job.get("temporal") else None
    if job["kind"] == "engine":
        with torch.no_grad():
            backend = head.backend_for(text.word_emb, job["kernel"])  # the registered backend that will run
        fused = backend.name != "torch"
        if job.get("chunk"):
            ta = tb = job["chunk"]
        else:
            default = default_block_elements(text.word_emb, fused)  # as XCLIP.similarity
            max_elements = default if budget is None else int(budget * 2**20) // backend.bytes_per_element(dtype, head.mask_padding)
            ta, tb = block_sizes(case.texts, case.videos, case.words, case.frames, max_elements)

        def run():
            videos = video
            if temporal is not None:  # ours: the temporal encoder once per video, as encode_video does
                vid, frame = encode_videos(temporal, video.frame_emb.float(), video.frame_mask)
                videos = VideoFeatures(vid.to(dtype), frame.to(dtype), video.frame_mask)
            return head.blockwise(text, videos, scale, ta, tb, compile=job["compile"], kernel=job["kernel"])

        blocks = f"{ta}x{tb}"
    else:
        rows = job["rows"]
        run = lambda: reference_loop(head, text, video, rows=rows, temporal=temporal)  # noqa: E731
        blocks = f"{-(-case.texts // 40)}x{-(-case.videos // 40)}"
    with torch.no_grad():
        # load the kernels (their code pages count in the RSS) before the memory baseline is taken
        if job["kind"] == "engine":
            head.blockwise(text[:2], video[:2], scale, 1, 1, kernel=job["kernel"])
        reference_loop(head, text[:80], video[:80], rows=1, cols=1, temporal=temporal)
        for _ in range(job.get("warmup", 0)):  # the reference warms up on its first tile only
            run() if job["kind"] == "engine" else reference_loop(head, text, video, rows=1, cols=1, temporal=temporal)
        _sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if device != "cuda":
            _reset_peak_rss()
        base_mem = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else _rss_mib()
        times, out = [], None
        for _ in range(job["runs"]):
            out = None  # the previous result is not part of this run's peak
            t0 = time.perf_counter()
            out = run()
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _maxrss_mib()) - base_mem
        total_peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _maxrss_mib()
        check, floor = None, None
        if job["kind"] == "engine" and job.get("check", True):  # against the reference on a corner of tiles
            ref = reference_loop(head, text.to(dtype=torch.float32), video.to(dtype=torch.float32), rows=1, cols=2, temporal=temporal)
            got = out[: ref.shape[0], : ref.shape[1]].float().cpu().numpy()
            check = float(np.abs(got - ref).max())
        if job["kind"] == "engine" and job.get("floor", True):  # the frame-word GEMMs alone, same blocks
            floor = statistics.median(_gemm_floor(head, text, video, ta, tb, device) for _ in range(job["runs"]))
    return {"times": times, "peak_mib": max(0.0, peak), "total_peak_mib": total_peak, "blocks": blocks, "check": check,
            "floor": floor, "fused": job["kind"] == "engine" and fused}


def _gemm_floor(head: MultiGrainedSimilarity, text: TextFeatures, video: VideoFeatures, ta: int, tb: int, device: str) -> float:
    """Seconds for the frame-word GEMMs alone (``(w W_loc / tau) @ frames^T`` per block): the floor of any
    exact method, since every word x frame dot product is needed."""
    word_local = head.prepare_text(text).word_local
    b, f, d = video.frame_emb.shape
    frames = [video.frame_emb[j : j + tb].transpose(0, 1).reshape(-1, d) for j in range(0, b, tb)]
    _sync(device)
    t0 = time.perf_counter()
    for frame in frames:
        for i in range(0, len(text), ta):
            word_local[i : i + ta].reshape(-1, d) @ frame.t()
    _sync(device)
    return time.perf_counter() - t0


def measure_in_subprocess(job: dict, threads: int | None = None) -> dict:
    """CPU: a fresh process per measurement so that ``ru_maxrss`` is this measurement's peak."""
    cmd = [sys.executable, os.path.abspath(__file__), *(["--threads", str(threads)] if threads else []), "--worker", json.dumps(job)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({job['kind']} {job['case']}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- report
def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_mem(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default=None, help="comma-separated TEXTSxVIDEOS@FRAMES/WORDS (default: per device)")
    parser.add_argument("--dtypes", default=None, help="comma-separated fp32,bf16,fp16 (default: fp32,bf16 on CPU; bf16,fp32 on CUDA)")
    parser.add_argument("--compile", default=None, choices=["off", "on", "both"], help="torch.compile of the block function (CUDA only; default both on CUDA)")
    parser.add_argument("--kernel", default="auto", help="comma-separated AOSM implementations: auto, torch, fused "
                        "(XCLIP.similarity's kernel argument; default auto = the fused C++ kernel on CPU)")
    parser.add_argument("--memory-budget-mb", default=None, help="comma-separated block budgets in MiB (default: XCLIP.similarity's, 2^25 frame-word elements per block on CUDA, 2^20 on CPU)")
    parser.add_argument("--chunk-size", type=int, default=None, help="texts and videos per block (overrides the budget)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine configuration (default: 3 CPU, 5 CUDA)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="timed runs of a full (not extrapolated) baseline")
    parser.add_argument("--baseline-rows", type=int, default=None, help="text-block rows of 40 the baseline runs (default: all at 1000x1000 12/32, fewer above)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--reference-temporal", action="store_true",
                        help="end-to-end eval similarity: the reference re-runs the temporal encoder per tile, ours once per video (both timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cpu-large", action="store_true", help="only 4917x4917 @ 64/64 fp32 on CPU, one run, bounded memory")
    parser.add_argument("--cpu-large-dtype", default="fp32", choices=sorted(DTYPES), help="dtype for --cpu-large")
    parser.add_argument("--cpu-large-budget-mb", type=float, default=None, help="block budget for --cpu-large (default: the CPU default blocks)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    gpu = args.device == "cuda"

    def run_job(job: dict) -> dict:
        return measure(job) if gpu else measure_in_subprocess(job, args.threads)

    if args.cpu_large:
        case = Case(4917, 4917, 64, 64)
        job = {"kind": "engine", "device": "cpu", "case": asdict(case), "dtype": args.cpu_large_dtype, "compile": False,
               "kernel": args.kernel.split(",")[0],
               "budget_mb": args.cpu_large_budget_mb, "runs": 1, "check": True, "floor": False}
        r = run_job(job)
        print(f"\n{time.strftime('%Y-%m-%d')}, CPU: {torch.get_num_threads()} threads, torch {torch.__version__}\n")
        print("| case | dtype | AOSM | blocks (texts x videos) | budget | time (1 run) | peak RSS (process) | peak above inputs | max abs diff vs reference (2 tiles) |")
        print("|---|---|---|---|---|---|---|---|---|")
        budget = "default" if args.cpu_large_budget_mb is None else f"{args.cpu_large_budget_mb:.0f} MiB"
        print(f"| {case} | {args.cpu_large_dtype} | {'fused' if r['fused'] else 'torch'} | {r['blocks']} | {budget} | {_fmt_time(r['times'][0])} | "
              f"{_fmt_mem(r['total_peak_mib'])} | {_fmt_mem(r['peak_mib'])} | {r['check']:.2e} |")
        return

    sizes = args.sizes or ("1000x1000@12/32,1000x1000@64/64" + (",4917x4917@64/64" if gpu else ""))
    cases = [Case.parse(s) for s in sizes.split(",")]
    dtypes = (args.dtypes or ("bf16,fp32" if gpu else "fp32,bf16")).split(",")
    compile_modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile or ("both" if gpu else "off")]
    if not gpu:
        compile_modes = [False]
    budgets = [None] if args.memory_budget_mb is None else [float(x) for x in args.memory_budget_mb.split(",")]
    runs = args.runs or (5 if gpu else 3)

    stamp = time.strftime("%Y-%m-%d")
    if gpu:
        print(f"\n{stamp}, GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
              f"TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}\n")
    else:
        print(f"\n{stamp}, CPU: {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    if args.reference_temporal:
        print("Both sides include the temporal encoder (4 layers): the reference re-runs it for every tile, ours runs it once per video.\n")
    print("| case | dtype | engine | blocks (texts x videos) | engine time | frame-word GEMMs alone | engine peak | "
          "reference loop (fp32, 40x40 tiles) | reference peak | speed-up | max abs diff vs reference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        base = None
        if not args.no_baseline:
            rows = args.baseline_rows or baseline_rows(case, args.reference_temporal)
            job = {"kind": "reference", "device": args.device, "case": asdict(case), "dtype": "fp32", "rows": rows,
                   "runs": args.baseline_runs if rows == 40 else 1, "warmup": 1 if gpu else 0, "temporal": args.reference_temporal}
            r = run_job(job)
            t = statistics.median(r["times"]) * 40 / rows
            label = _fmt_time(t) + ("" if rows == 40 else f" (extrapolated from {rows}/40 rows)")
            base = (t, label, r["peak_mib"])
        for dtype in dtypes:
            for compile_, kernel in [(c, k) for c in compile_modes for k in args.kernel.split(",")
                                     if not (c and k == "fused")]:  # compile does not apply to the fused kernels
                for budget in budgets:
                    job = {"kind": "engine", "device": args.device, "case": asdict(case), "dtype": dtype, "compile": compile_,
                           "kernel": kernel,
                           "budget_mb": budget, "chunk": args.chunk_size, "runs": runs, "warmup": (2 if compile_ else 1) if gpu else 0,
                           "temporal": args.reference_temporal}
                    r = run_job(job)
                    t = statistics.median(r["times"])
                    engine = (("triton kernels" if gpu else "fused kernel") if r["fused"] else "compiled" if compile_ else "eager") + (
                        "" if budget is None else f", {budget:.0f} MiB budget")
                    if args.chunk_size:
                        engine += f", chunk {args.chunk_size}"
                    ref_time, ref_label, ref_peak = base if base else (None, "-", None)
                    ratio = f"{ref_time / t:.1f}x" if ref_time else "-"
                    print(f"| {case} | {dtype} | {engine} | {r['blocks']} | {_fmt_time(t)} | {_fmt_time(r['floor'])} | {_fmt_mem(r['peak_mib'])} | "
                          f"{ref_label} | {_fmt_mem(ref_peak) if ref_peak is not None else '-'} | {ratio} | {r['check']:.2e} |", flush=True)
    print(f"\nengine time: median of {runs} runs" + (" after warm-up" if gpu else "") + "; reference: median of "
          f"{args.baseline_runs} runs when run in full, 1 run when extrapolated. Peak memory is above the inputs.")


if __name__ == "__main__":
    main()
