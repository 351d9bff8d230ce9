"""Every YAML in conf/ instantiates (with a tiny model on CPU) and every class_path in it imports."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

from xclip_pl.cli import build_cli

CONF = Path(__file__).resolve().parents[1] / "conf"
CONFIGS = sorted(CONF.glob("*.yaml"))


def load_composed(path: Path):
    """A recipe as written, with every nested config file (a value ``parts/x.yaml``) read in its place."""
    def expand(node):
        if isinstance(node, str) and node.endswith(".yaml") and (path.parent / node).is_file():
            return load_composed(path.parent / node)
        if isinstance(node, dict):
            return {k: expand(v) for k, v in node.items()}
        if isinstance(node, list):
            return [expand(v) for v in node]
        return node
    return expand(yaml.safe_load(path.read_text()))


def class_paths(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["class_path"]] if "class_path" in node else []
        return found + [p for value in node.values() for p in class_paths(value)]
    if isinstance(node, list):
        return [p for value in node for p in class_paths(value)]
    return []


def test_there_are_the_eleven_configs():
    names = {p.stem for p in CONFIGS}
    for dataset in ("msrvtt", "msvd", "lsmdc", "didemo", "activitynet"):
        assert {f"{dataset}_vit_b32", f"{dataset}_vit_b16"} <= names
    assert "synthetic" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_instantiates_with_a_tiny_model(path, tmp_path):
    config = load_composed(path)
    for class_path in class_paths(config):
        module, name = class_path.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name), class_path
    cli = build_cli(["--config", str(path), "--model.model.init_args.clip", "tiny", "--data.init_args.image_size", "32",
                     "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
                     "--trainer.num_nodes", "1", "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
                    run=False)
    data = config["data"]["init_args"]
    assert type(cli.datamodule).__name__ == config["data"]["class_path"].rsplit(".", 1)[1]
    assert cli.model.model.max_words == data["max_words"] and cli.model.model.max_frames == data["max_frames"]
    assert cli.datamodule.batch_size == data["batch_size"]
    assert cli.trainer.max_epochs == config["trainer"]["max_epochs"]


# The reference code's value of every switch that differs from xclip-pl's default (docs/fidelity.md section 2,
# xclip-method.md 15), transcribed here by hand: each paper recipe must write all of them.
REFERENCE_SWITCHES = {
    ("trainer", "precision"): "32-true",
    ("model", "model", "init_args", "clip_dtype"): "fp16",
    ("model", "model", "init_args", "freeze_layers"): 0,
    ("model", "optimizer", "class_path"): "xclip_pl.train.bertadam.BertAdam",
    ("model", "optimizer", "init_args", "max_grad_norm"): 1.0,
    ("model", "scheduler", "class_path"): "xclip_pl.train.schedules.ReferenceWarmupCosine",
    ("model", "no_decay"): "bias",
    ("model", "gather_grad"): "local_slice",
    ("model", "local_loss"): False,
    ("model", "model", "init_args", "mask_padding"): False,
    ("model", "model", "init_args", "frame_features"): "clip",
    ("model", "model", "init_args", "temporal_init"): "clip_text",
    ("model", "model", "init_args", "encode_padded_frames"): True,
    ("model", "model", "init_args", "text_padding_mask"): False,
    ("model", "false_negative_mask"): False,
    ("checkpoint", "ties"): "later",
    ("data", "init_args", "frame_times"): "reference",
    ("data", "init_args", "color_matrix"): "bt601",
    ("data", "init_args", "resize"): "pil",
    ("data", "init_args", "pad_token_id"): 0,
}
# Not paper recipes: the embedded default, and the ViT-L/14 FSDP recipe (modern numerics; tests/test_fsdp.py runs it)
NOT_PAPER = {"synthetic", "msrvtt_vit_l14_fsdp"}
PAPER_RECIPES = [p for p in CONFIGS if p.stem not in NOT_PAPER]


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=[p.stem for p in PAPER_RECIPES])
def test_paper_recipe_writes_every_reference_switch(path):
    config = load_composed(path)
    for (*parents, key), expected in REFERENCE_SWITCHES.items():
        node = config
        for parent in parents:
            node = node.get(parent, {})
        name = ".".join((*parents, key))
        assert key in node and node[key] == expected, f"{path.name}: {name} should be {expected!r}"
    # the GPU count under the local-slice gather is part of the recipe (docs/fidelity.md 2.6)
    assert config["model"]["gather_grad_devices"] == config["trainer"]["devices"], path.name


# ---------------------------------------------------------------------------- conf/overlays/fast.yaml
FAST = CONF / "overlays" / "fast.yaml"
FAST_CHANGES = {  # the overlay's keys: numerics only; every other resolved value stays the paper recipe's
    ("trainer", "precision"): "bf16-mixed",
    ("model", "model", "init_args", "clip_dtype"): "fp32",
    ("model", "optimizer"): {"class_path": "xclip_pl.train.optim.AdamW",
                             "init_args": {"betas": [0.9, 0.98], "eps": 1e-06, "fused": True}},
    ("model", "compile"): True,
}


def _resolved(*configs: Path) -> dict:
    from xclip_pl.cli import ParseOnlyCLI  # noqa: PLC0415

    args = [a for c in configs for a in ("--config", str(c))]
    cli = build_cli(args, run=False, cli_class=ParseOnlyCLI)
    return yaml.safe_load(cli.parser.dump(cli.config, skip_none=False, skip_link_targets=False))


def _flatten(node, prefix=()):
    if isinstance(node, dict) and not ({"class_path"} <= set(node) and prefix == ("model", "optimizer")):
        return {k: v for key, value in node.items() for k, v in _flatten(value, (*prefix, key)).items()}
    return {prefix: node}


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=[p.stem for p in PAPER_RECIPES])
def test_fast_overlay_changes_only_the_numerics(path):
    faithful = _flatten(_resolved(path))
    fast = _flatten(_resolved(path, FAST))
    changed = {k for k in faithful.keys() | fast.keys() if faithful.get(k) != fast.get(k)} - {("config",)}
    assert changed == set(FAST_CHANGES), path.name
    assert {k: fast[k] for k in FAST_CHANGES} == FAST_CHANGES


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=[p.stem for p in PAPER_RECIPES])
def test_fast_recipe_instantiates_with_a_tiny_model(path, tmp_path):
    cli = build_cli(["--config", str(path), "--config", str(FAST), "--model.model.init_args.clip", "tiny",
                     "--data.init_args.image_size", "32", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                     "--trainer.strategy", "auto", "--trainer.num_nodes", "1", "--trainer.logger", "false",
                     "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model.hparams.compile is True and cli.model.model.clip_dtype == "fp32"
    assert cli.trainer.precision == "bf16-mixed"
    optimizer = cli.model.optimizer([torch.nn.Parameter(torch.zeros(2))], lr=1e-4, weight_decay=0.0)
    assert optimizer.defaults["fused"] is True


def test_fast_overlay_trains_with_gradient_clipping(tmp_path):
    """The fast overlay on a paper recipe takes real optimiser steps through `xclip-pl fit`: bf16-mixed with fused
    AdamW and the recipe's gradient clipping (Lightning refused to clip for an optimiser that marks its fused step
    as AMP-unscaling, so the overlay stopped at its first step while instantiating fine)."""
    from xclip_pl.data.synthetic import ensure_synthetic_msrvtt  # noqa: PLC0415

    root = tmp_path / "msrvtt"
    ensure_synthetic_msrvtt(root, num_train=8, num_test=4, seed=0, progress=False)
    recipe = CONF / "msrvtt_vit_b32.yaml"
    cli = build_cli(["fit", "--config", str(recipe), "--config", str(FAST), "--model.model.init_args.clip", "tiny",
                     "--model.compile", "false", "--data.init_args.root", str(root), "--data.init_args.image_size", "32",
                     "--data.init_args.max_frames", "3", "--data.init_args.max_words", "16",
                     "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
                     "--data.init_args.frame_cache", "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                     "--trainer.strategy", "auto", "--trainer.num_nodes", "1", "--trainer.logger", "false",
                     "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.callbacks", "[]",
                     "--trainer.enable_progress_bar", "false", "--model.gather_grad_devices", "1",
                     "--trainer.default_root_dir", str(tmp_path / "runs"), "--test_after_fit", "false"])
    assert cli.trainer.gradient_clip_val == 1.0 and cli.trainer.precision == "bf16-mixed"
    (optimizer,) = cli.trainer.optimizers
    assert optimizer.defaults["fused"] is True
    assert cli.trainer.global_step == 2  # two optimiser steps, each with clipping
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
