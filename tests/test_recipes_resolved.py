"""#12's guarantee: every recipe resolves to the same hyper-parameters as before the reshape.

``tests/data/resolved_before/<recipe>.yaml`` is ``xclip-pl fit --config conf/<recipe>.yaml --print_config``
taken on the commit before the reshape. :func:`mapped` moves each old key to its new place (the table in
the issue-12 note); the recipes of today, resolved through the same parser (nested ``conf/parts/*.yaml``
files included), must equal the result key for key and value for value.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from xclip_pl.cli import ParseOnlyCLI, build_cli

TESTS = Path(__file__).resolve().parent
CONF = TESTS.parent / "conf"
BEFORE = TESTS / "data" / "resolved_before"
RECIPES = sorted(p.stem for p in BEFORE.glob("*.yaml"))

NETWORK_KEYS = ("clip", "temporal_layers", "temporal_layer_norm_eps", "temporal_init", "temperature", "mask_padding",
                "frame_features", "text_padding_mask", "official_checkpoint", "clip_config", "encode_padded_frames",
                "clip_dtype", "freeze_layers")
OPTIMIZERS = {"adamw": "xclip_pl.train.optim.AdamW", "bertadam": "xclip_pl.train.bertadam.BertAdam"}
SCHEDULES = {"hf": "xclip_pl.train.schedules.WarmupCosine", "reference": "xclip_pl.train.schedules.ReferenceWarmupCosine"}
RESCORING_DEFAULTS = {"test_time": None, "test_time_temperature": 1.0, "qb_norm_bank_size": 5000, "qb_norm_k": 1,
                      "qb_norm_beta": 20.0, "sinkhorn_iterations": 50}
ALWAYS_ON = [{"class_path": "xclip_pl.callbacks.tokenizer.TokenizerCopy"},  # were module / datamodule behaviour
             {"class_path": "xclip_pl.callbacks.bad_videos.BadVideoReport", "init_args": {"filename": "bad_videos.tsv"}}]
# issue 14 items 3-4, after the reshape: what observes a run (diagnostics, throughput, summary, progress);
# none of them changes a hyper-parameter
OBSERVERS = [{"class_path": "xclip_pl.callbacks.diagnostics.RetrievalDiagnostics",
              "init_args": {"directory": "diagnostics", "heatmap_size": 32, "sample_size": 64, "stages": ["val", "test"]}},
             {"class_path": "xclip_pl.callbacks.throughput.Throughput"},
             {"class_path": "xclip_pl.callbacks.summary.RunSummary",
              "init_args": {"data_filename": "data_summary.csv", "filename": "summary.txt"}},
             {"class_path": "xclip_pl.callbacks.progress.XCLIPProgressBar",
              "init_args": {"leave": False, "log_every_n_steps": 50, "mode": "auto", "refresh_rate": 1}}]


def mapped(before: dict) -> dict:
    """The pre-reshape resolved config with every key at its new place."""
    cfg = copy.deepcopy(before)
    old = cfg["model"]
    model = {"model": {"class_path": "xclip_pl.model.xclip.XCLIP",
                       "init_args": {k: old.pop(k) for k in NETWORK_KEYS}}}
    optimizer = {"betas": old.pop("betas"), "eps": old.pop("eps")}
    if old["optimizer"] == "bertadam":
        optimizer["max_grad_norm"] = 1.0  # was hard-coded in the module
    else:
        optimizer["fused"] = None  # AdamW's argument added in #13; None = torch's own choice, as before
    model["optimizer"] = {"class_path": OPTIMIZERS[old.pop("optimizer")], "init_args": optimizer}
    model["scheduler"] = {"class_path": SCHEDULES[old.pop("lr_schedule")],
                          "init_args": {"warmup_ratio": old.pop("warmup_ratio")}}
    rescoring = {k: old.pop(k) for k in RESCORING_DEFAULTS}
    assert rescoring == RESCORING_DEFAULTS, "a recipe had test-time re-scoring on: map it to TestTimeRescoring"
    examples = {"class_path": "xclip_pl.callbacks.examples.RetrievalExamples",
                "init_args": {"num_examples": old.pop("log_examples")}}
    model.update(old)  # lr, groups policy, loss, gather and evaluation knobs stay on the LightningModule
    model["compile"] = False  # added after the reshape (issue 13), off in every recipe
    cfg["model"] = model
    assert cfg["trainer"]["callbacks"] is None
    cfg["trainer"]["callbacks"] = [examples, *ALWAYS_ON, *OBSERVERS]
    assert cfg.pop("optimizer") is None and cfg.pop("lr_scheduler") is None  # Lightning's auto optimizer: off
    cfg["data"]["init_args"].setdefault("missing_videos", "error")  # base argument now; was the same behaviour
    cfg["data"]["init_args"]["frame_cache"] = True  # issue 13, after the reshape: the cache is on in every recipe
    # issue 13 item 3, after the reshape: the new default resizes with torch's antialiased bicubic (PIL's filter,
    # within 2 levels of its bytes); recipes that reproduce the reference's loader (frame_times: reference) keep
    # PIL's bicubic, the resize every recipe had before
    paper = cfg["data"]["init_args"].get("frame_times") == "reference"
    cfg["data"]["init_args"]["resize"] = "pil" if paper else "torch"
    # issue 14, after the reshape: last.ckpt every 500 steps too (mid-epoch resume), `--require_checkpoint`, and
    # the W&B logger's `id` (a resumed run continues its own run id); none changes what a run computes
    cfg["checkpoint"]["last_every_n_train_steps"] = 500
    cfg["model"]["model"]["init_args"]["activation_checkpointing"] = False  # issue 13: memory switch, off as before
    cfg["data"]["init_args"]["frame_cache_format"] = "npy"  # issue 13: the raw frames, as the cache stored them before
    cfg["require_checkpoint"] = False
    if isinstance(cfg["trainer"].get("logger"), dict):
        cfg["trainer"]["logger"]["init_args"]["id"] = None
    return cfg


def resolved_now(recipe: str) -> dict:
    cli = build_cli(["--config", str(CONF / f"{recipe}.yaml")], run=False, cli_class=ParseOnlyCLI)
    return yaml.safe_load(cli.parser.dump(cli.config, skip_none=False, skip_link_targets=False))


def _drop_cli_only(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("config", "ckpt_path", "weights_only")}


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_resolves_to_the_values_it_had_before_the_reshape(recipe):
    want = _drop_cli_only(mapped(yaml.safe_load((BEFORE / f"{recipe}.yaml").read_text())))
    got = _drop_cli_only(resolved_now(recipe))
    got["model"]["model"]["init_args"].pop("max_words", None)  # link targets (from data.*): the "before"
    got["model"]["model"]["init_args"].pop("max_frames", None)  # printout leaves them out too
    assert got == want

