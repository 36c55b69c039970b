"""``lit-reason``: a LightningCLI over any module of the GRPO family and any reasoning DataModule.

    lit-reason fit --config configs/quickstart/grpo.yaml
    lit-reason fit --model GRPO --data ToyDataModule --trainer.max_steps 10
    lit-reason fit --config X.yaml --print_config
    lit-reason gallery --task maze --difficulty hard -k 2
    lit-reason export --ckpt runs/x/last.ckpt --out my-policy     # a save_pretrained directory
    lit-reason evaluate --model smollm2-135m-instruct -n 4        # the versioned Enigmata benchmark

Short class names work for everything imported here (``model: GRPO``, ``data: EnigmataDataModule``).
"""

from __future__ import annotations

import logging
import os
import sys

import lightning as L
from lightning.fabric.utilities.rank_zero import _get_rank, rank_prefixed_message
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

import callbacks  # noqa: F401  (registers callback classes for short names)
from callbacks.training_report import TrainingReport
import datamodules  # noqa: F401  (registers DataModules for short names)
import lit_reason.modules  # noqa: F401  (registers modules for short names)
from callbacks.preemption import PreemptionCheckpoint
from lit_reason.app.cli_errors import exit_code, one_line_error
from lit_reason.app.fit_checks import check_batch_division, check_ckpt_file, say_if_starting_fresh
from lit_reason.strategies.atomic_sharded_save import make_sharded_saves_atomic
from lit_reason.utils.checkpoint_io import AtomicCheckpointIO

SEED_LOG = logging.getLogger("lightning.fabric.utilities.seed")


class LitReasonCLI(LightningCLI):
    """LightningCLI with the project's defaults: subclass mode for model and data, configs saved
    next to the logs, seeding on by default so a YAML run is reproducible, and metrics logged
    every step (an RL step takes seconds to minutes; Lightning's default of 50 left short runs
    with no metric at all)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs["trainer_defaults"] = {"log_every_n_steps": 1, **(kwargs.get("trainer_defaults") or {})}
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)

    def _set_seed(self) -> None:
        """Seeds as LightningCLI does, but says "Seed set to N" only once the classes are built, so
        that a bad setting (see ``main``) is the only line printed."""
        level = SEED_LOG.level
        SEED_LOG.setLevel(logging.WARNING)
        try:
            super()._set_seed()
        finally:
            SEED_LOG.setLevel(level)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        seed = self._get(self.config, "seed_everything")
        if seed is not False and seed is not None:
            SEED_LOG.info(rank_prefixed_message(f"Seed set to {seed}", _get_rank()))

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--report", type=bool, default=True,
                            help="write plots, samples and report.md next to the logs (callbacks.TrainingReport) "
                                 "unless false; a TrainingReport in trainer.callbacks replaces the default one")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Default loggers (when ``trainer.logger`` is unset or true): CSV and TensorBoard, both in
        ``<default_root_dir>/lightning_logs/version_N`` (one directory per run). Always: atomic
        checkpoint writes (unless a CheckpointIO plugin is given; sharded ones staged and swapped
        into place by lit_reason.strategies.atomic_sharded_save) and the preemption checkpoint
        (docs/fault_tolerance.md); the training report unless ``report: false``."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        if "logger" not in kwargs and trainer_config.get("logger") in (None, True):
            root = trainer_config.get("default_root_dir") or os.getcwd()
            csv = CSVLogger(root)
            kwargs["logger"] = [csv, TensorBoardLogger(root, version=csv.version)]
        plugins = kwargs.get("plugins", trainer_config.get("plugins"))
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins] if plugins else []
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        make_sharded_saves_atomic(trainer.strategy)  # FSDP / DeepSpeed write their own directories
        if not any(isinstance(c, PreemptionCheckpoint) for c in trainer.callbacks):
            trainer.callbacks.append(PreemptionCheckpoint())
        if self._get(self.config_init, "report", default=True) and not any(
                isinstance(c, TrainingReport) for c in trainer.callbacks):
            trainer.callbacks.append(TrainingReport())
        return trainer

    def before_instantiate_classes(self) -> None:
        """Checks that need the model's and the data's settings together, before the model loads."""
        super().before_instantiate_classes()
        config = self.config.get(self.config.get("subcommand")) or self.config
        check_batch_division(config.get("model"), config.get("data"))

    def _parse_ckpt_path(self) -> None:
        """A checkpoint file is checked before anything loads. For ``fit`` LightningCLI would then
        overwrite the config's ``model`` settings with the checkpoint's (so an explicit path ignored
        every change while ``last`` applied them); here the config wins either way and the module
        lists what changed (lit_reason.modules.resume_config). validate / test / predict keep
        Lightning's behaviour (the checkpoint's settings rebuild its model)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        check_ckpt_file(self.config[subcommand].get("ckpt_path"), self.config[subcommand].get("model"))
        if subcommand != "fit":
            super()._parse_ckpt_path()

    def before_fit(self) -> None:
        say_if_starting_fresh(self.trainer, self.config_init["fit"].get("ckpt_path"))


COMMANDS = {
    "fit": "train (lit-reason fit --config X.yaml)",
    "validate": "one pass over the validation data",
    "test": "evaluate on the test data (your own: data.test_path or the held-out rows)",
    "predict": "Lightning's predict loop",
    "export": "a checkpoint -> a save_pretrained directory (lit-reason export --ckpt C --out D)",
    "evaluate": "the versioned Enigmata benchmark of a model or checkpoint",
    "gallery": "print Enigmata puzzles with their answers",
}


def overview() -> str:
    """``lit-reason --help``: every command, LightningCLI's and the project's own."""
    lines = ["usage: lit-reason <command> [--config X.yaml] [options]", "", "commands:"]
    lines += [f"  {name:<9} {what}" for name, what in COMMANDS.items()]
    lines += ["", "lit-reason <command> --help lists the options of a command (a class's own options:",
              "lit-reason fit --model.help GRPO; --print_config shows the merged config)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    from lit_reason.utils.quiet import quiet_known_warnings

    quiet_known_warnings()  # the known-harmless library messages only (lit_reason/utils/quiet.py)
    if os.getcwd() not in sys.path:  # your callbacks / rewards next to your config, as `python -m` would find them
        sys.path.append(os.getcwd())
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        raise SystemExit(0 if argv else 2)
    if argv and argv[0] == "gallery":
        from datamodules.enigmata.gallery import main as gallery_main

        raise SystemExit(gallery_main(argv[1:]))
    if argv and argv[0] == "export":
        from lit_reason.app.export import main as export_main

        raise SystemExit(export_main(argv[1:]))
    if argv and argv[0] == "evaluate":
        from lit_reason.app.evaluate import main as evaluate_main

        raise SystemExit(evaluate_main(argv[1:]))
    try:  # exit_on_error=False: parse errors are raised (not printed as a usage dump) and end up below
        LitReasonCLI(args=None if from_command_line else argv,  # None: LightningCLI reads sys.argv itself
                     parser_kwargs={"exit_on_error": False})
    except Exception as err:
        message = one_line_error(err)  # bad input (a setting, a path, a key) is one line; bugs keep the traceback
        if message is None or os.environ.get("LIT_REASON_TRACEBACK"):
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(exit_code(err)) from None


if __name__ == "__main__":
    main()
