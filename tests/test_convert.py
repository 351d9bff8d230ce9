"""`xclip-pl convert` + `xclip-pl test` on a reference-format checkpoint equal the Python loading path."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from helpers_model import randomize_matrices
from transformers import CLIPModel

from datamodules.synthetic import SyntheticDataModule
from xclip_pl import XCLIP
from xclip_pl.cli import build_cli, main
from xclip_pl.model.official import xclip_to_official
from xclip_pl.module import XCLIPRetrieval
from xclip_pl.tools.convert import convert

WORDS, FRAMES = 16, 3


def data_args(root: Path) -> dict:
    return {"root": str(root), "num_train": 12, "num_test": 6, "max_words": WORDS, "max_frames": FRAMES, "image_size": 32,
            "batch_size": 4, "eval_batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def setup_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    datamodule = SyntheticDataModule(**data_args(tmp / "data"))
    datamodule.prepare_data()
    datamodule.setup("test")
    tokenizer_dir = datamodule.save_tokenizer(tmp / "tokenizer")
    torch.manual_seed(3)
    model = XCLIP("tiny", max_words=WORDS, max_frames=FRAMES)
    randomize_matrices(model)
    reference = tmp / "pytorch_model.bin.4"
    torch.save(xclip_to_official(model), reference)
    return tmp, reference, Path(tokenizer_dir)


def run_test_cli(tmp: Path, ckpt: Path, words: int = WORDS) -> dict[str, float]:
    config = {"trainer": {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "default_root_dir": str(tmp / "run")},
              "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny"}}},
              "data": {"class_path": "datamodules.synthetic.SyntheticDataModule", "init_args": {**data_args(tmp / "data"), "max_words": words}}}
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = build_cli(["test", "--config", str(path), "--ckpt_path", str(ckpt)])
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}


def test_convert_then_cli_test_equals_python_loading(setup_files):
    tmp, reference, tokenizer_dir = setup_files
    main(["convert", str(tmp / "converted"), "--reference_checkpoint", str(reference), "--max_words", str(WORDS),
          "--max_frames", str(FRAMES), "--tokenizer", str(tokenizer_dir)])
    shutil.move(tmp / "converted", tmp / "moved")  # as if copied to another machine: the original path is gone
    ckpt = tmp / "moved" / "xclip.ckpt"
    from_cli = run_test_cli(tmp, ckpt)  # the tokenizer comes from clip/ beside the checkpoint

    module = XCLIPRetrieval(XCLIP(official_checkpoint=str(reference), max_words=WORDS, max_frames=FRAMES))
    datamodule = SyntheticDataModule(**data_args(tmp / "data"), tokenizer=str(tokenizer_dir))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp / "py"))
    trainer.test(module, datamodule=datamodule, verbose=False)
    from_python = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    assert from_cli == from_python and "test/t2v/R@1" in from_cli


def test_checkpoint_sizes_must_match_the_data(setup_files):
    tmp, reference, tokenizer_dir = setup_files
    main(["convert", str(tmp / "converted2"), "--reference_checkpoint", str(reference), "--max_words", str(WORDS),
          "--max_frames", str(FRAMES), "--tokenizer", str(tokenizer_dir)])
    with pytest.raises(ValueError, match=r"max_words=16.*max_words=12"):
        run_test_cli(tmp, tmp / "converted2" / "xclip.ckpt", words=12)


def test_converted_checkpoint_loads_after_its_directory_moves(setup_files, monkeypatch):
    tmp, reference, tokenizer_dir = setup_files
    convert(str(tmp / "portable"), reference_checkpoint=str(reference), max_words=WORDS, max_frames=FRAMES)
    shutil.move(tmp / "portable", tmp / "elsewhere")
    assert not (tmp / "portable").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained was called: the checkpoint holds every weight")

    monkeypatch.setattr(CLIPModel, "from_pretrained", refuse)
    loaded = XCLIPRetrieval.load_from_checkpoint(tmp / "elsewhere" / "xclip.ckpt", map_location="cpu")
    expected = XCLIPRetrieval(XCLIP(official_checkpoint=str(reference), max_words=WORDS, max_frames=FRAMES)).state_dict()
    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def test_cli_needs_a_tokenizer_for_a_checkpoint_converted_without_one(setup_files):
    tmp, reference, tokenizer_dir = setup_files
    convert(str(tmp / "no_tokenizer"), reference_checkpoint=str(reference), max_words=WORDS, max_frames=FRAMES)
    with pytest.raises(ValueError, match=r"converted without --tokenizer.*data.init_args.tokenizer"):
        run_test_cli(tmp, tmp / "no_tokenizer" / "xclip.ckpt")
