"""The ``xclip-pl`` command: LightningCLI with pluggable datamodules (``--data.class_path``)."""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
import warnings

from jsonargparse import lazy_instance
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from xclip_pl.callbacks.checkpointing import XCLIPModelCheckpoint
from xclip_pl.callbacks.prediction_writer import EmbeddingWriter
from xclip_pl.callbacks.progress import XCLIPProgressBar
from xclip_pl.callbacks.summary import RunSummary
from xclip_pl.data.datamodule import VideoTextDataModule
from xclip_pl.errors import checkpoint_error, clear_parse_errors, unwrap_instantiation_error
from xclip_pl.loggers import XCLIPWandbLogger
from xclip_pl.model.openai_clip import is_openai_checkpoint, tokenizer_hint
from xclip_pl.model.presets import PRESETS
from xclip_pl.module import XCLIPRetrieval
from xclip_pl.tools.convert import converted_tokenizer
from xclip_pl.train.resume import prepare_trainer, resolve_ckpt_path

# Lightning 2.6 builds torch's deprecated LeafSpec when it moves batches; torch 2.13 warns at every `test`, and
# there is nothing for a user to act on
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


class XCLIPSaveConfig(SaveConfigCallback):
    """Writes config.yaml beside the run (overwriting) and records the full config in W&B."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        logger = trainer.logger
        if isinstance(logger, XCLIPWandbLogger):
            experiment = logger.experiment
            experiment.config.update({"cli": self.config.as_dict()}, allow_val_change=True)
            if getattr(experiment, "dir", None):
                self.parser.save(self.config, f"{experiment.dir}/config.yaml", skip_none=False, overwrite=True)


class XCLIPCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(XCLIPModelCheckpoint, "checkpoint")  # + checkpoint.ties (reference: later)
        parser.set_defaults({"checkpoint.monitor": "val/t2v/R@1", "checkpoint.mode": "max", "checkpoint.save_last": True,
                             "checkpoint.filename": "best-epoch{epoch}-step{step}", "checkpoint.auto_insert_metric_name": False,
                             "checkpoint.last_every_n_train_steps": 500})  # a kill loses at most 500 steps
        parser.add_lightning_class_args(EmbeddingWriter, "prediction_writer")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After `fit`, test the best checkpoint (by val/t2v/R@1) on the test split.")
        parser.add_argument("--require_checkpoint", type=bool, default=False,
                            help="With `fit --ckpt_path last`: stop with an error when there is no last.ckpt to resume "
                                 "(default: start a new run, after a loud message).")
        parser.link_arguments("data.init_args.max_words", "model.model.init_args.max_words")
        parser.link_arguments("data.init_args.max_frames", "model.model.init_args.max_frames")

    def before_instantiate_classes(self) -> None:
        """No progress-bar callback under ``enable_progress_bar: false``. Without ``data.init_args.tokenizer``: the
        tokenizer beside a converted checkpoint, or the pretrained CLIP's."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        _drop_progress_bar_if_disabled(cfg.trainer)
        data_args, network = cfg.data.init_args, cfg.model.model.init_args
        clip = network.get("clip")
        if data_args.get("tokenizer") is not None:
            return
        if network.get("clip_config") and cfg.get("ckpt_path"):  # a checkpoint written by `xclip-pl convert`
            data_args.tokenizer = converted_tokenizer(cfg.ckpt_path)
            if data_args.tokenizer is None:
                raise ValueError(f"{cfg.ckpt_path} was converted without --tokenizer and data.init_args.tokenizer is unset: "
                                 "set data.init_args.tokenizer to the CLIP tokenizer directory of these weights")
        elif clip is not None and clip not in PRESETS and not network.get("official_checkpoint"):
            if is_openai_checkpoint(clip):
                raise ValueError(tokenizer_hint(clip))
            data_args.tokenizer = clip  # a pretrained CLIP directory or hub id brings its own tokenizer

    def after_instantiate_classes(self) -> None:
        size = self.model.image_size
        if self.datamodule.hparams.get("image_size", size) != size:
            network = self.model.model.init_args
            clip = network["clip"] or network["official_checkpoint"] or "the checkpoint's CLIP"
            raise ValueError(f"data.image_size={self.datamodule.hparams['image_size']} but the CLIP vision tower "
                             f"({clip}) expects {size}: set data.init_args.image_size={size}")

    def _finish_wandb(self) -> None:
        """Close the W&B run so the summary and files are written now (offline runs: ready for `wandb sync`)."""
        logger = self.trainer.logger
        if isinstance(logger, XCLIPWandbLogger) and self.trainer.is_global_zero and logger._experiment is not None:
            logger.experiment.finish()

    def _print_summary(self, command: str) -> None:
        """Rank 0 prints the summary screen of the run's ``RunSummary`` callback (if it has one)."""
        summary = next((c for c in self.trainer.callbacks if isinstance(c, RunSummary)), None)
        if summary is not None and self.trainer.is_global_zero:
            print(summary.report(self.trainer, command), flush=True)

    def after_test(self) -> None:
        if self.subcommand == "test":
            self._print_summary("test")
        self._finish_wandb()

    after_validate = after_predict = after_test

    def instantiate_trainer(self, **kwargs):
        """Lightning's trainer, plus exact resume (RNG states, loader position) and atomic checkpoint writes."""
        return prepare_trainer(super().instantiate_trainer(**kwargs))

    def before_fit(self) -> None:
        """``--ckpt_path last``: the latest run's last.ckpt, continued in its own directory and W&B run."""
        fit = self.config_init["fit"]
        fit["ckpt_path"] = resolve_ckpt_path(self.trainer, fit.get("ckpt_path"), fit.get("require_checkpoint", False))

    def before_test(self) -> None:
        self.config_init[self.subcommand]["verbose"] = False  # the module prints one t2v / v2t table instead

    before_validate = before_test

    def after_fit(self) -> None:
        if not (self.config.fit.get("test_after_fit", True) and self.trainer.state.finished):
            self._print_summary("fit")
            self._finish_wandb()
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if best:
            print(f"best checkpoint: {best}")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        self._print_summary("fit")
        self._finish_wandb()


class ParseOnlyCLI(XCLIPCLI):
    """The CLI's parser as ``--print_config`` uses it: the config is resolved (nested files, links, flags) but
    no hook runs and nothing is built (no model, data or trainer). ``build_cli(args, run=False,
    cli_class=ParseOnlyCLI).config`` is the resolved config."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass


def _drop_progress_bar_if_disabled(trainer_cfg) -> None:
    """``trainer.enable_progress_bar: false`` wins over the recipe's ``XCLIPProgressBar`` (Lightning refuses a
    progress-bar callback with the bar disabled)."""
    callbacks = trainer_cfg.get("callbacks")
    if trainer_cfg.get("enable_progress_bar") is False and isinstance(callbacks, list):
        trainer_cfg.callbacks = [c for c in callbacks if _class_path_of(c) != _class_path_of(XCLIPProgressBar)]


def _class_path_of(item) -> str | None:
    if isinstance(item, type):
        return f"{item.__module__}.{item.__qualname__}"
    return item.get("class_path") if hasattr(item, "get") else None


def _import_plugins() -> None:
    """Import the built-in datamodules and any registered plugins so class names resolve on the CLI.

    ``datamodules`` is a generic name: if the package that ``import datamodules`` finds is not xclip-pl's
    (its ``__xclip_pl__`` marker is missing), stop with an error naming that package's location."""
    package = importlib.import_module("datamodules")
    if not getattr(package, "__xclip_pl__", False):
        where = getattr(package, "__file__", None) or ", ".join(getattr(package, "__path__", [])) or repr(package)
        raise ImportError(
            f"`import datamodules` finds another package than xclip-pl's dataset plugins: {where}. It comes first on "
            "the import path (the current directory, PYTHONPATH, site-packages), so `class_path: datamodules.<dataset>."
            "<Class>` cannot reach xclip-pl's datamodules. Rename or uninstall that package, or run from a directory "
            "and with a PYTHONPATH that do not hold it; register a datamodule of your own under the "
            "'xclip_pl.datamodules' entry-point group rather than in a package named `datamodules`.")
    for entry in importlib.metadata.entry_points(group="xclip_pl.datamodules"):
        entry.load()


TOOLS = {"convert": "xclip_pl.tools.convert:convert", "search": "xclip_pl.tools.search_cli:search",
         "cache": "xclip_pl.tools.cache:cache"}


def main(args: list[str] | None = None) -> None:
    """Console entry point: ``xclip-pl {fit,validate,test,predict}`` (LightningCLI) or ``xclip-pl {convert,search,cache}``."""
    argv = sys.argv[1:] if args is None else list(args)
    with clear_parse_errors(argv):  # a parse error ends naming the config file and line, or the key
        if argv and argv[0] in TOOLS:
            module, function = TOOLS[argv[0]].split(":")
            tool = getattr(importlib.import_module(module), function)
            if getattr(tool, "takes_cli_args", False):  # parses its own flags and the recipe's (`cache --config ...`)
                tool(argv[1:])
                return
            from jsonargparse import auto_cli  # noqa: PLC0415

            auto_cli(tool, args=argv[1:])
            return
        try:
            build_cli(args)
        except ValueError as error:  # a datamodule's own message, not jsonargparse's report around it
            cause = unwrap_instantiation_error(error)
            if cause is error:
                raise
            raise cause from None
        except Exception as error:  # a --ckpt_path that is not a checkpoint: name it
            clear = checkpoint_error(error, argv)
            if clear is None:
                raise
            raise clear from error


def build_cli(args: list[str] | None = None, run: bool = True, cli_class: type[XCLIPCLI] = XCLIPCLI) -> XCLIPCLI:
    """Parse ``args`` (default: sys.argv), build the CLI (``cli_class``) and run its subcommand when ``run``."""
    _import_plugins()
    return cli_class(
        XCLIPRetrieval,
        VideoTextDataModule,
        subclass_mode_data=True,
        save_config_callback=XCLIPSaveConfig,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # model.optimizer / model.scheduler: the module builds its parameter groups
        trainer_defaults={"logger": lazy_instance(XCLIPWandbLogger)},
        parser_kwargs={"default_env": False},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
