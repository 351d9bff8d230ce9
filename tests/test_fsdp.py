"""FSDP (``conf/msrvtt_vit_l14_fsdp.yaml``, ``xclip_pl.train.fsdp``) on 2 CPU processes over gloo.

``xclip-pl fit`` runs the recipe itself as a subprocess (Lightning's launcher starts the second process, as on
GPUs), with a tiny CLIP, tiny synthetic MSR-VTT data, ``accelerator: cpu``, ``devices: 2`` and ``precision:
32-true`` (CPU autocast and FSDP's bf16 weights do not mix). A callback defined here (:class:`ShardDump`,
imported by the subprocess from this file) saves what each rank holds at the end of training. The tests check
that every CLIP encoder layer and temporal block was split in halves between the ranks, that everything else
was replicated, that ``last.ckpt`` is exactly the two halves put together and loads into an unsharded module,
and that FSDP trains to the same weights as DDP on the same batches (so the feature gathers, the replicated
parameters' gradient averaging and the clipping by the global norm all work under sharding).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import Callback

from xclip_pl.cli import build_cli
from xclip_pl.data.synthetic import ensure_synthetic_msrvtt
from xclip_pl.module import XCLIPRetrieval
from xclip_pl.train.fsdp import (
    XCLIP_LAYERS,
    XCLIPFSDPPrecision,
    XCLIPFSDPStrategy,
    replicate_outside_units,
    unit_classes,
)

TESTS = Path(__file__).resolve().parent
RECIPE = TESTS.parent / "conf" / "msrvtt_vit_l14_fsdp.yaml"
TINY_LAYERS = {"CLIPEncoderLayer": 4, "TemporalBlock": 1}  # tiny preset: 2 text + 2 vision layers; 1 temporal block
CLIP_VALUE = 0.01  # small enough that every step clips: a wrong (per-rank) norm would change the weights


class ShardDump(Callback):
    """Saves ``<default_root_dir>/rank<r>.pt`` at the end of training: per FSDP unit its module path (FSDP's and
    the checkpoint wrapper's prefixes removed), wrapped class, parameter names, unpadded size and this rank's
    shard of the flat parameter; and every parameter left out of FSDP (``replicated``). Rank 0 also saves the
    weights before training (``initial.pt``)."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # before the strategy wraps the module
        if trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), Path(trainer.default_root_dir) / "initial.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: PLC0415
        from torch.distributed.fsdp._common_utils import clean_tensor_name  # noqa: PLC0415

        units = []
        for path, module in trainer.strategy.model.named_modules():
            handle = module._handle if isinstance(module, FSDP) else None
            if handle is not None:
                flat = handle.flat_param
                units.append({"path": clean_tensor_name(path), "cls": type(module.module).__name__,
                              "fqns": [clean_tensor_name(f) for f in flat._fqns],
                              "numel": flat._unpadded_unsharded_size.numel(), "shard": flat.detach().clone()})
        replicated = {name: p.detach().clone() for name, p in pl_module.named_parameters()
                      if getattr(p, "_xclip_grad_averaged", False)}
        torch.save({"units": units, "replicated": {clean_tensor_name(k): v for k, v in replicated.items()}},
                   Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt")


def _overrides(tmp: Path, data_root: Path) -> Path:
    """The recipe shrunk to 2 CPU processes, a tiny CLIP and tiny data; weights that move (lr 1e-3 everywhere)."""
    config = {
        "trainer": {"accelerator": "cpu", "devices": 2, "precision": "32-true", "max_epochs": 1, "logger": False,
                    "gradient_clip_val": CLIP_VALUE, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1,
                    "callbacks": [{"class_path": "test_fsdp.ShardDump"}]},
        "model": {"model": {"init_args": {"clip": "tiny", "temporal_layers": 1}}, "lr": 1.0, "backbone_lr_scale": 1.0,
                  "weight_decay": 0.0, "optimizer": {"class_path": "torch.optim.SGD"}, "scheduler": None},
        "data": {"class_path": "datamodules.synthetic.SyntheticDataModule",
                 "init_args": {"root": str(data_root), "num_train": 8, "num_test": 6, "max_words": 16, "max_frames": 3,
                               "image_size": 32, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0,
                               "frame_cache": False}},
        "test_after_fit": False,
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(run_dir: Path, overrides: Path, *flags: str) -> Path:
    """``xclip-pl fit --config <recipe> --config <overrides> ...`` in a subprocess; its default_root_dir."""
    script = Path(sys.executable).with_name("xclip-pl")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "xclip_pl.cli"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
           "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "fit", "--config", str(RECIPE), "--config", str(overrides),
                           "--trainer.default_root_dir", str(run_dir), *flags],
                          cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"xclip-pl fit failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One FSDP and one DDP fit of the same recipe, data and seed."""
    tmp = tmp_path_factory.mktemp("fsdp")
    data_root = tmp / "synthetic"
    ensure_synthetic_msrvtt(data_root, num_train=8, num_test=6, seed=0, progress=False)
    overrides = _overrides(tmp, data_root)
    return {"fsdp": _fit(tmp / "fsdp", overrides), "ddp": _fit(tmp / "ddp", overrides, "--trainer.strategy", "ddp")}


def _last(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def _dumps(run_dir: Path) -> list[dict]:
    return [torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_the_recipe_builds_the_sharding_strategy(tmp_path):
    cli = build_cli(["--config", str(RECIPE), "--model.model.init_args.clip", "tiny", "--data.init_args.image_size", "32",
                     "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
                     "--trainer.default_root_dir", str(tmp_path)], run=False)
    strategy = cli.trainer.strategy
    assert type(strategy) is XCLIPFSDPStrategy
    assert set(unit_classes(strategy.kwargs["auto_wrap_policy"])) == XCLIP_LAYERS
    assert set(strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes) == XCLIP_LAYERS
    assert strategy.kwargs["use_orig_params"] is True and strategy._state_dict_type == "full"
    assert isinstance(strategy.precision_plugin, XCLIPFSDPPrecision) and strategy.precision_plugin.precision == "bf16-mixed"
    assert cli.trainer.gradient_clip_val == 1.0 and cli.model.model.clip_dtype == "fp32"


def test_outside_the_units_every_parameter_is_replicated():
    from xclip_pl.model.xclip import XCLIP  # noqa: PLC0415

    model = XCLIP("tiny", max_words=16, max_frames=3, temporal_layers=1)
    replicated = {id(p) for p in replicate_outside_units(model, tuple(XCLIP_LAYERS))}
    names = {n for n, p in model.named_parameters() if id(p) in replicated}
    assert "towers.clip.logit_scale" in names and "similarity_head.word_logit_weight" in names
    assert not any(".layers." in n or "temporal.blocks." in n for n in names)
    assert len(names) + sum(1 for n, _ in model.named_parameters() if ".layers." in n or "temporal.blocks." in n) == \
        len(list(model.parameters()))
    with pytest.raises(ValueError, match="list of layer classes"):
        unit_classes(lambda module, recurse, nonwrapped_numel: True)


def test_every_layer_is_split_between_the_two_ranks(runs):
    ranks = _dumps(runs["fsdp"])
    state = _last(runs["fsdp"])
    counts: dict[str, int] = {}
    for unit0, unit1 in zip(*(r["units"] for r in ranks), strict=True):
        assert unit0["path"] == unit1["path"] and unit0["fqns"] == unit1["fqns"]
        counts[unit0["cls"]] = counts.get(unit0["cls"], 0) + 1
        layer = sum(state[f"{unit0['path']}.{f}"].numel() for f in unit0["fqns"])
        assert unit0["numel"] == layer > 0
        assert unit0["shard"].numel() == unit1["shard"].numel() == math.ceil(layer / 2), unit0["path"]
    assert counts == TINY_LAYERS  # and nothing else is an FSDP unit: the root holds no flat parameter


def test_last_checkpoint_is_the_two_halves_and_loads_into_an_unsharded_module(runs):
    ranks, state = _dumps(runs["fsdp"]), _last(runs["fsdp"])
    for unit0, unit1 in zip(ranks[0]["units"], ranks[1]["units"]):
        whole = torch.cat([unit0["shard"], unit1["shard"]])[: unit0["numel"]]
        parts = [state[f"{unit0['path']}.{f}"] for f in unit0["fqns"]]
        for fqn, part, flat in zip(unit0["fqns"], parts, whole.split([p.numel() for p in parts]), strict=True):
            assert torch.equal(flat.view_as(part), part), f"{unit0['path']}.{fqn}"
    assert ranks[0]["replicated"].keys() == ranks[1]["replicated"].keys()
    for name, value in ranks[0]["replicated"].items():
        assert torch.equal(value, ranks[1]["replicated"][name]) and torch.equal(value, state[name]), name

    module = XCLIPRetrieval.load_from_checkpoint(runs["fsdp"] / "checkpoints" / "last.ckpt", map_location="cpu")
    assert type(module) is XCLIPRetrieval and module.model.max_words == 16
    loaded = module.state_dict()
    assert loaded.keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(loaded[name], value), name


def test_fsdp_trains_the_weights_ddp_trains(runs):
    """Same batches, seed and clipping (every step clips to norm 0.01), plain SGD (lr 1, no decay), so each
    update is the clipped gradient itself: FSDP's reduce-scattered layer gradients, the averaged replicated ones
    and the global norm over shards give DDP's weights up to float rounding (seen: <= 1e-8; the weights moved
    1e-4 to 3e-3 in the 5 steps). A gradient summed instead of averaged, or a norm of one rank's shards only,
    changes the direction of the clipped update and the weights by about the update's size."""
    fsdp, ddp = _last(runs["fsdp"]), _last(runs["ddp"])
    assert fsdp.keys() == ddp.keys()
    initial = torch.load(runs["ddp"] / "initial.pt", weights_only=True)
    for name, value in ddp.items():
        torch.testing.assert_close(fsdp[name], value, rtol=0.0, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")
    moved = {name: (value - initial[name]).abs().max().item() for name, value in ddp.items() if ".mlp.fc" in name}
    assert len(moved) == 20 and min(moved.values()) > 1e-5, moved  # fc1/fc2 weights and biases of the 5 layers


def test_random_vit_l14_preset_has_openai_vit_l14_sizes():
    """The recipe's backbone without a download (benchmarks): OpenAI ViT-L/14's widths, depths and 427.6 M weights."""
    from transformers import CLIPModel  # noqa: PLC0415

    from xclip_pl.model.presets import preset_config  # noqa: PLC0415

    config = preset_config("random-vit-l-14")
    with torch.device("meta"):
        clip = CLIPModel(config)
    assert sum(p.numel() for p in clip.parameters()) == 427_616_513
    assert (config.vision_config.num_hidden_layers, config.vision_config.hidden_size, config.vision_config.patch_size,
            config.text_config.hidden_size, config.projection_dim) == (24, 1024, 14, 768, 768)
