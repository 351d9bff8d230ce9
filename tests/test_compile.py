"""``model.compile``: the encoders and the training similarity through ``torch.compile``, checkpoints unchanged.

The end-to-end tests compile with inductor, which on CPU builds C++ for every graph: about 100 s on
two cores with an empty inductor cache (~45 s with a warm one). They run in ``make test`` all the same:
"a compiled ``xclip-pl fit`` trains, checkpoints, resumes and tests" is a promise CI has to check.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import Callback

from helpers_model import make_module, random_ids
from xclip_pl.cli import build_cli
from xclip_pl.data.synthetic import ensure_synthetic_msrvtt
from xclip_pl.model.xclip import XCLIP
from xclip_pl.module import XCLIPRetrieval

TINY = dict(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
TESTS = Path(__file__).resolve().parent


def test_compile_keeps_the_state_dict_and_checkpoints_load_both_ways():
    torch.manual_seed(0)
    plain = make_module(**TINY)
    torch.manual_seed(0)
    compiled = make_module(**TINY, compile=True)
    assert compiled.hparams.compile and not plain.hparams.compile
    compiled.configure_model()
    plain.configure_model()
    assert sorted(compiled._compiled) == ["encode_text", "encode_video", "similarity"] and plain._compiled == {}
    first = dict(compiled._compiled)
    compiled.configure_model()  # Lightning calls it in every stage: compiles once
    assert compiled._compiled == first

    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in k for k in compiled.state_dict())
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01)
    compiled.load_state_dict(plain.state_dict(), strict=True)  # uncompiled -> compiled
    other = make_module(**TINY)
    other.load_state_dict(compiled.state_dict(), strict=True)  # compiled -> uncompiled
    for (name, a), b in zip(plain.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name


def _batch(n: int = 4) -> dict:
    torch.manual_seed(1)
    ids, mask = random_ids(n, TINY["max_words"], lengths=[4, 8, 6])
    frames = torch.randint(0, 256, (n, TINY["max_frames"], 32, 32, 3), dtype=torch.uint8)
    frame_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]][:n], dtype=torch.bool)
    return {"input_ids": ids, "attention_mask": mask, "frames": frames, "frame_mask": frame_mask,
            "video_index": torch.arange(n)}


def test_compiled_training_step_matches_the_uncompiled_one():
    """Same loss and gradients for a fixed batch. Tolerance: fp32; inductor fuses and reorders the reductions
    (layer norms, softmaxes, matmul epilogues), which moves results by float rounding (~1e-7 relative per op,
    a few layers deep); 1e-5 is far above that and far below any real difference (a wrong mask, scale or
    pooling moves the loss by >1e-2)."""
    torch.manual_seed(0)
    plain = make_module(**TINY)
    compiled = make_module(**TINY, compile=True)
    compiled.load_state_dict(plain.state_dict())
    compiled.configure_model()
    batch = _batch()
    losses, grads = [], []
    for module in (plain, compiled):
        loss = module.training_step(batch, 0)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    assert grads[1].keys() == grads[0].keys() and len(grads[0]) > 0
    scale = max(g.abs().max().item() for g in grads[0].values())  # per-tensor scales fail on zero gradients
    for name, g in grads[0].items():  # (the key biases': softmax ignores them, what is left is rounding)
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-5 * scale, msg=lambda m, name=name: f"{name}: {m}")


def _config(tmp: Path, data_root: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "log_every_n_steps": 1, "logger": False,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp / "runs")},
        "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny", "temporal_layers": 1}},
                  "lr": 1e-3},
        "data": {"class_path": "datamodules.synthetic.SyntheticDataModule",
                 "init_args": {"root": str(data_root), "num_train": 8, "num_test": 6, "max_words": 16, "max_frames": 3,
                               "image_size": 32, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0}},
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _test_metrics(cli) -> dict[str, float]:
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}


def test_compiled_fit_checkpoints_resumes_and_tests(tmp_path):
    data_root = tmp_path / "synthetic"
    ensure_synthetic_msrvtt(data_root, num_train=8, num_test=6, seed=0, progress=False)
    config = _config(tmp_path, data_root)
    on = ["--model.compile", "true"]

    fit = build_cli(["fit", "--config", str(config), *on, "--test_after_fit", "false"])
    assert fit.model._compiled, "configure_model did not compile"
    steps = fit.trainer.global_step
    assert fit.trainer.current_epoch == 1 and steps > 0
    last = Path(fit.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    uncompiled = XCLIPRetrieval(XCLIP(**TINY))
    assert list(state) == list(uncompiled.state_dict())
    assert torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]["compile"] is True

    resumed = build_cli(["fit", "--config", str(config), *on, "--test_after_fit", "false", "--trainer.max_epochs", "2",
                         "--ckpt_path", str(last)])
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 2 * steps  # restored, then one more epoch
    best = resumed.trainer.checkpoint_callback.best_model_path
    assert best and Path(best).is_file()

    tested = _test_metrics(build_cli(["test", "--config", str(config), *on, "--ckpt_path", best]))
    assert {"test/t2v/R@1", "test/v2t/R@1"} <= tested.keys()
    eager = _test_metrics(build_cli(["test", "--config", str(config), "--ckpt_path", best]))  # compiled ckpt, eager module
    assert eager.keys() == tested.keys()
    for key, value in eager.items():
        assert tested[key] == pytest.approx(value, abs=1e-4), key  # ranks of 6 videos; rounding cannot reorder them


class CompiledRanks(Callback):
    """Writes ``<default_root_dir>/compiled<rank>.txt``: which functions this rank's module compiled; rank 0
    also saves the weights before training (``initial.pt``)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), Path(trainer.default_root_dir) / "initial.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        path = Path(trainer.default_root_dir) / f"compiled{trainer.global_rank}.txt"
        path.write_text(",".join(sorted(pl_module._compiled)))


def _ddp_fit(run_dir: Path, config: Path, *flags: str) -> dict[str, torch.Tensor]:
    """``xclip-pl fit`` on 2 CPU processes (gloo DDP) in a subprocess; the weights in its last.ckpt."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "xclip_pl.cli", "fit", "--config", str(config),
                           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.default_root_dir",
                           str(run_dir), "--trainer.callbacks+=test_compile.CompiledRanks", "--test_after_fit", "false",
                           "--model.optimizer", "torch.optim.SGD", "--model.scheduler", "null", "--model.lr", "0.1",
                           *flags], cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"xclip-pl fit failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_compiled_ddp_fit_on_two_processes_equals_the_eager_one(tmp_path):
    """``model.compile`` under DDP (2 CPU processes, gloo): every rank compiles, the gathers and gradient
    averaging still work, and the weights equal an eager DDP run's on the same batches to float rounding
    (SGD, so no normalised update can magnify a rounding difference)."""
    data_root = tmp_path / "synthetic"
    ensure_synthetic_msrvtt(data_root, num_train=8, num_test=6, seed=0, progress=False)
    config = _config(tmp_path, data_root)
    eager = _ddp_fit(tmp_path / "eager", config)
    compiled = _ddp_fit(tmp_path / "compiled", config, "--model.compile", "true")
    for rank in (0, 1):
        assert (tmp_path / "compiled" / f"compiled{rank}.txt").read_text() == "encode_text,encode_video,similarity"
        assert (tmp_path / "eager" / f"compiled{rank}.txt").read_text() == ""
    initial = torch.load(tmp_path / "eager" / "initial.pt", weights_only=True)
    assert all(torch.equal(initial[k], v) for k, v in
               torch.load(tmp_path / "compiled" / "initial.pt", weights_only=True).items())  # same start
    assert list(compiled) == list(eager) == list(initial)
    moved = max((eager[k] - initial[k]).abs().max().item() for k in eager if eager[k].is_floating_point())
    assert moved > 1e-3  # the runs trained
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
