"""The ``robocds`` command: LightningCLI for MultiTaskCQL with data sharing as a callback.

    robocds fit --config base.yaml --config cds.yaml --data.root /path/to/dataset
    python -m robocds.train fit --config base --config cds ...
    robocds validate --config base --config cds --ckpt_path runs/cds/version_0/checkpoints/best.ckpt

``--config`` takes a path, or the name of a packaged config (``base``, ``no_sharing``, ``sharing_all``,
``cds``, ``cds_percentile``, ``bc``, ``filtered_bc``, ``gpu``) when no such file exists. Besides the usual
``trainer``, ``model`` and ``data`` sections, the CLI has:

- ``sharing``: the ``robocds.callbacks.DataSharing`` callback (mode none / all / cds / uds / share_successes,
  thresholds);
- ``checkpoint``: a ``ModelCheckpoint`` saving ``best.ckpt`` (lowest ``val/td_loss``);
- ``last_checkpoint``: a ``ModelCheckpoint`` saving ``last.ckpt``, the latest weights, every epoch and at the
  end of training (what evaluation uses). It is a callback of its own because Lightning's ``save_last``
  re-saves ``last.ckpt`` only when the monitored checkpoint is saved: once ``val/td_loss`` stopped
  improving, ``last.ckpt`` silently stayed at that early step;
- ``run_name`` / ``runs_dir``: where logs go when ``trainer.logger`` is not set: the TensorBoard events,
  the resolved ``config.yaml`` and ``checkpoints/`` land in ``<runs_dir>/<run_name>/version_N``, the CSV
  log in its ``csv/metrics.csv`` (``run_name`` defaults to the sharing mode; for behaviour cloning, to
  ``model.objective``). ``--trainer.default_root_dir`` is honoured as the runs folder when ``runs_dir`` is
  not given; giving both, different, is refused.

``robocds fit ... --ckpt_path <run>/checkpoints/last.ckpt`` resumes that run exactly (see
``robocds.train.resume``): when the checkpoint lies in ``<runs_dir>/<run_name>/version_N``, the run goes on
in that folder (same checkpoints and best score, its ``metrics.csv`` and TensorBoard log continued from the
checkpoint's step) rather than starting a ``version_N+1``.

The data module's ``num_tasks``, ``num_actions``, ``image_size``, ``proprio_dim``, ``task_names`` and ``env``
(the env settings the data was recorded with) are linked into the model when the data module is instantiated,
so they are never typed twice and every checkpoint carries them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from robocds.callbacks import DataSharing, check_objective_sharing
from robocds.config import TRAINING_SEED_MAX
from robocds.errors import (
    INTERRUPTED_STATUS,
    USER_ERROR_STATUS,
    ConfigError,
    UserError,
    one_line,
    output_dir,
    report_error,
    run_cli,
    user_error_in,
)
from robocds.module import MultiTaskCQL
from robocds.train.checkpoint_io import AtomicCheckpointIO
from robocds.train.layout import BEST_CHECKPOINT, CONFIG_DIR, CSV_FOLDER, LAST_CHECKPOINT, RunLayout
from robocds.train.resume import ContinuedCSVLogger, ExactResume, checkpoint_step
from robocds.train.run_config import SaveRunConfig

DEFAULT_RUNS_DIR = "runs"
LINKED_FROM_DATA = ("num_tasks", "num_actions", "image_size", "proprio_dim", "task_names", "env")
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/td_loss",
    "checkpoint.mode": "min",
    "checkpoint.save_top_k": 1,
    "checkpoint.save_last": False,
    "checkpoint.filename": BEST_CHECKPOINT,
    # No monitor: the newest checkpoint is the one kept, under a fixed name, overwritten in place.
    "last_checkpoint.monitor": None,
    "last_checkpoint.save_top_k": 1,
    "last_checkpoint.filename": LAST_CHECKPOINT,
    "last_checkpoint.enable_version_counter": False,
}


PROG = "robocds"
# Lightning's start-up lines ("GPU available: ...", "TPU available: ...", its tips) and the seed line (the seed
# is in the run's config.yaml): held back until the first batch is asked for, so an error in the data or the
# settings found before it is the only line on stderr.
_STARTUP_LOGGER = "lightning.pytorch.utilities.rank_zero"
_SEED_LOGGER = "lightning.fabric.utilities.seed"


class HoldStartupLines(logging.Filter, Callback):
    """Holds the INFO records of Lightning's rank-zero logger until a loop starts, then lets them through."""

    def __init__(self) -> None:
        logging.Filter.__init__(self)
        self.held: list[logging.LogRecord] | None = []
        logger = logging.getLogger(_STARTUP_LOGGER)
        for stale in [f for f in logger.filters if isinstance(f, HoldStartupLines)]:  # an earlier CLI's, in-process
            logger.removeFilter(stale)
        logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.held is None or record.levelno > logging.INFO:
            return True
        self.held.append(record)
        return False

    def release(self, *args: Any) -> None:
        held, self.held = self.held, None
        logger = logging.getLogger(_STARTUP_LOGGER)
        logger.removeFilter(self)
        for record in held or []:
            logger.handle(record)

    def on_validation_start(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:  # a fit's sanity check runs before its training data is loaded
            self.release()

    on_train_start = on_test_start = on_predict_start = release


TERMINATED_STATUS = 143  # 128 + SIGTERM: what a scheduler that pre-empted the job expects to see


class StopOnSignal(Callback):
    """SIGTERM (a scheduler's pre-emption): Lightning finishes the batch and stops; this saves ``last.ckpt`` at
    that step (atomically) so that ``--ckpt_path <run>/checkpoints/last.ckpt`` goes on from it. Ctrl-C: no
    checkpoint (the last epoch's ``last.ckpt`` stays). ``main`` turns either into its exit status."""

    stopped: str | None = None  # "sigterm" or "sigint", class-wide: the CLI copies its callbacks
    saved: str | None = None

    def on_exception(self, trainer: Trainer, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            StopOnSignal.stopped = "sigint"
        if not isinstance(exception, SIGTERMException):
            return
        StopOnSignal.stopped = "sigterm"
        last = next(
            (cb for cb in trainer.checkpoint_callbacks if getattr(cb, "filename", None) == LAST_CHECKPOINT), None
        )
        if last is None or last.dirpath is None:
            return
        path = os.path.join(last.dirpath, LAST_CHECKPOINT + last.FILE_EXTENSION)
        partial = path + ".partial"
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, path)  # a kill during the save leaves the previous last.ckpt whole
            StopOnSignal.saved = path


def condense_parser_message(message: str) -> str:
    """jsonargparse's multi-line error (nested ``Parser key`` sections, a union's alternatives, the given
    value) as one ``--<key path>: <problem>`` line: the keys joined, the ``None`` alternative dropped."""
    keys: list[str] = []
    problems: list[str] = []
    skip_below: int | None = None  # indentation of a dropped list item: its sub-lines go too
    for raw in message.splitlines():
        text = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if skip_below is not None and indent > skip_below:
            continue
        skip_below = None
        item = text[2:] if text.startswith("- ") else text
        if not item or item.startswith(_NOISE):
            continue
        if item.startswith("Expected a <class 'NoneType'>"):
            skip_below = indent
            continue
        key = _PARSER_KEY.match(item)
        if key:
            keys.append(key.group(1))
            item = key.group(2)
        if item:
            problems.append(item)
    what = ".".join(dict.fromkeys(keys))
    why = "; ".join(dict.fromkeys(problems)) or message.strip()
    return f"--{what}: {why}" if what else why


_PARSER_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)')
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Problem with given class_path",
)


class RoboCDSParser(LightningArgumentParser):
    """A LightningArgumentParser whose command-line errors end in one line, ``robocds: error: ...``, exit 2
    (jsonargparse prints the whole usage and, for a data-module argument, every union alternative)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # Not exiting (nested parsers) or JSONARGPARSE_DEBUG set (a developer wants the whole story): as upstream.
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        cause = user_error_in(ex) if ex is not None else None
        report_error(PROG, str(cause) if cause is not None else condense_parser_message(message))
        self.exit(USER_ERROR_STATUS)


class RoboCDSCLI(LightningCLI):
    """LightningCLI with MultiTaskCQL as the model, any LightningDataModule (by class path) as data.

    User errors end in one line (see ``robocds.errors``): command-line and config errors through
    ``RoboCDSParser``; a setting the data module or the model refuses when they are built is raised as a
    ``ConfigError``; ``--ckpt_path`` is checked (and always loaded with ``weights_only=True``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", RoboCDSParser)
        kwargs.setdefault("model_class", MultiTaskCQL)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        # The optimizer is a constructor argument of the model (OptimizerCallable), not a CLI-level group.
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        defaults = kwargs.setdefault("trainer_defaults", {})
        defaults["callbacks"] = [
            *_as_list(defaults.get("callbacks")),
            ExactResume(),
            HoldStartupLines(),
            StopOnSignal(),
        ]
        # Progress bars are for a terminal: into a log file they are carriage-return noise.
        defaults.setdefault("enable_progress_bar", sys.stdout.isatty() and sys.stderr.isatty())
        logging.getLogger(_SEED_LOGGER).setLevel(logging.WARNING)
        # Lightning's own use of a torch API torch deprecated: nothing a user can act on.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_name", type=str | None, default=None, help="log folder name (default: sharing mode)")
        parser.add_argument(
            "--runs_dir", type=str | None, default=None, help="root folder of the default loggers (default: runs)"
        )
        parser.add_lightning_class_args(DataSharing, "sharing")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        for key in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        section = self.config.get(subcommand) if subcommand else self.config  # run=False: no subcommand level
        if section is None:
            return
        if section.get("weights_only") is False:
            raise ConfigError(
                "--weights_only false: refused; robocds checkpoints hold only tensors and plain data, and a full "
                "unpickle could run code hidden in the file"
            )
        if "weights_only" in section:
            section["weights_only"] = True  # explicit, whatever torch's default
        model, sharing = section.get("model"), section.get("sharing")
        if model is not None and sharing is not None:  # before any run folder is made (the callback checks it too)
            check_objective_sharing(model.get("objective", "cql"), sharing.get("mode", "cds"))
        check_run_settings(section)
        if section.get("ckpt_path"):
            # Before Lightning reads its hyperparameters: a bad file ends as one line naming it.
            self._checkpoint_step = checkpoint_step(section["ckpt_path"])

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            if user_error_in(err) is not None:
                raise
            # A settings check (``__post_init__``, the module's constructor) refused a configured value;
            # jsonargparse wraps the data module's in a union-type error: keep the real problem only.
            raise ConfigError(condense_parser_message(str(err))) from err

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") is None and "logger" not in kwargs:
            kwargs["logger"] = self._default_loggers()
        if trainer_config.get("plugins") is None and "plugins" not in kwargs:
            kwargs["plugins"] = [AtomicCheckpointIO()]  # a full disk never truncates last.ckpt / best.ckpt
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ModuleNotFoundError) as err:
            # Lightning refusing a trainer setting (devices, accelerator, limits) or missing its accelerator's package.
            raise ConfigError(f"--trainer: {one_line(err)}") from err

    def _runs_dir(self) -> str:
        """``--runs_dir``, else ``--trainer.default_root_dir`` (Lightning's own option for where outputs go)."""
        runs_dir = self._get(self.config, "runs_dir")
        root_dir = self._get(self.config, "trainer").get("default_root_dir")
        if runs_dir and root_dir and Path(runs_dir).resolve() != Path(root_dir).resolve():
            raise ConfigError(
                f"--trainer.default_root_dir {root_dir} / --runs_dir {runs_dir}: both say where the run's logs and "
                "checkpoints go; give one of them"
            )
        return runs_dir or root_dir or DEFAULT_RUNS_DIR

    def _default_loggers(self) -> list[Any]:
        """TensorBoard in ``<runs_dir>/<run_name>/version_N``, CSV in its ``csv/`` sub-folder.

        Resuming from a checkpoint of ``<runs_dir>/<run_name>/version_N``: that same folder, both logs
        continued from the checkpoint's step (what the interrupted process logged after it is dropped).
        """
        objective = getattr(self._get(self.config, "model"), "objective", "cql")
        default_name = self._get(self.config, "sharing").mode if objective == "cql" else objective
        name = self._get(self.config, "run_name") or default_name
        root = self._runs_dir()
        resumed = self._resumed_run(RunLayout(Path(root), name))
        if resumed is None:
            tensorboard = TensorBoardLogger(root, name=name, default_hp_metric=False)
            # CSV in a sub-folder of the TensorBoard run, so one folder holds the whole run (config, checkpoints).
            return [tensorboard, CSVLogger(tensorboard.log_dir, name="", version=CSV_FOLDER)]
        version, step = resumed
        # TensorBoard hides the events an earlier writer logged at steps >= purge_step.
        tensorboard = TensorBoardLogger(root, name=name, version=version, default_hp_metric=False, purge_step=step)
        self.save_config_kwargs = {**self.save_config_kwargs, "overwrite": True}  # the run's config.yaml exists
        return [tensorboard, ContinuedCSVLogger(tensorboard.log_dir, name="", version=CSV_FOLDER, resume_step=step)]

    def _resumed_run(self, run: RunLayout) -> tuple[int, int] | None:
        """(version, step) when ``fit`` resumes from a checkpoint inside a version of ``run``, else None."""
        ckpt_path = self._get(self.config, "ckpt_path", default=None) if self.subcommand == "fit" else None
        if ckpt_path is None:
            return None
        layout = RunLayout.of_checkpoint(ckpt_path)
        if layout is None or layout.folder.parent != run.folder.parent.resolve():
            return None
        return layout.version, self._checkpoint_step  # read when the arguments were checked


def check_run_settings(section: Any) -> None:
    """Trainer and run settings that Lightning would only refuse deep inside a fit (a division by zero, a
    numpy bounds error, a folder that is a file): checked once parsed, each a ``ConfigError`` naming the flag."""
    trainer = section.get("trainer") or {}
    for key in ("check_val_every_n_epoch", "accumulate_grad_batches"):
        value = trainer.get(key)
        if isinstance(value, int) and value < 1:
            raise ConfigError(f"--trainer.{key} {value}: must be >= 1")
    for key in ("max_steps", "max_epochs"):
        value = trainer.get(key)
        if isinstance(value, int) and value < -1:
            raise ConfigError(f"--trainer.{key} {value}: must be >= 0 (or -1: no limit)")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int | float) and interval <= 0:
        raise ConfigError(f"--trainer.val_check_interval {interval}: must be > 0")
    seed = section.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= TRAINING_SEED_MAX:
        raise ConfigError(f"--seed_everything {seed}: must be in [0, {TRAINING_SEED_MAX}]")
    folders = {
        "--runs_dir": section.get("runs_dir"),
        "--trainer.default_root_dir": trainer.get("default_root_dir"),
        "--checkpoint.dirpath": (section.get("checkpoint") or {}).get("dirpath"),
        "--last_checkpoint.dirpath": (section.get("last_checkpoint") or {}).get("dirpath"),
    }
    for flag, folder in folders.items():
        if folder:
            output_dir(folder, flag)


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def resolve_config_args(argv: list[str]) -> list[str]:
    """Replace ``--config NAME`` by the packaged ``configs/NAME.yaml`` when NAME is not an existing path."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("-c", "--config") and i + 1 < len(out):
            out[i + 1] = _packaged_config(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _packaged_config(arg[len("--config=") :])
    return out


def _packaged_config(value: str) -> str:
    if Path(value).exists():
        return value
    for candidate in (CONFIG_DIR / value, CONFIG_DIR / f"{value}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return value


class _CheckOnlyCLI(RoboCDSCLI):
    """Parses a command line and checks the data module's settings; builds nothing (no dataset is read)."""

    def instantiate_classes(self) -> None:
        section = self.config.get(self.subcommand) if self.subcommand else self.config
        data = section.get("data") if section is not None else None
        if data is None or getattr(data, "class_path", None) != "robocds.datasets.datamodule.OfflineDataModule":
            return
        import inspect

        from robocds.datasets.datamodule import DataSettings, OfflineDataModule

        given = dict(vars(data.init_args))
        defaults = {
            name: p.default
            for name, p in inspect.signature(OfflineDataModule).parameters.items()
            if p.default is not p.empty
        }
        values = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        fields = {name: values.get(name) for name in DataSettings.__dataclass_fields__}
        fields.update(root=str(values.get("root") or "<root>"), seed=values.get("seed") or 0)
        fields["val_batch_size"] = fields["val_batch_size"] or fields["batch_size"]
        DataSettings(**fields)  # a ConfigError naming the field and value, as the fit would raise it


def check_fit_arguments(args: Sequence[str]) -> None:
    """Check a ``robocds fit`` command line before any work it depends on (a dataset still to be generated):
    it parses (flags, types, config files) and the data module's settings pass their checks. A problem is a
    ``ConfigError`` naming the flag or field; nothing is built, read or written."""
    args = list(args)[1:] if list(args)[:1] == ["fit"] else list(args)  # run=False: a parser without subcommands
    args = [arg for i, arg in enumerate(args) if arg != "--ckpt_path" and args[i - 1 : i] != ["--ckpt_path"]]
    try:
        with warnings.catch_warnings():  # in-process with args of its own: Lightning's and jsonargparse's notes
            warnings.simplefilter("ignore")
            _CheckOnlyCLI(args=resolve_config_args(args), run=False, parser_kwargs={"exit_on_error": False})
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - jsonargparse's parse error: reported as the fit would
        cause = user_error_in(err)
        raise ConfigError(str(cause) if cause is not None else condense_parser_message(str(err))) from None


def main(args: Sequence[str] | None = None) -> None:
    """Run the CLI (``args=None``: the command line). SIGTERM: ``last.ckpt`` saved, exit 143; Ctrl-C: exit 130."""
    StopOnSignal.stopped = StopOnSignal.saved = None
    try:
        if args is None:
            # Rewritten in place: Lightning's DDP launcher re-runs sys.argv for the other ranks.
            sys.argv[1:] = resolve_config_args(sys.argv[1:])
            RoboCDSCLI()
        else:
            RoboCDSCLI(args=resolve_config_args(list(args)))
    except SystemExit as stop:  # Lightning ends a fit by SIGTERM (SIGTERMException) or Ctrl-C (exit 1) so
        if StopOnSignal.stopped == "sigterm":
            where = f"{StopOnSignal.saved} saved; resume with --ckpt_path {StopOnSignal.saved}"
            print(f"{PROG}: stopped by SIGTERM: {where if StopOnSignal.saved else 'no checkpoint saved'}",
                  file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(TERMINATED_STATUS) from None
        if StopOnSignal.stopped == "sigint":
            print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
            raise SystemExit(INTERRUPTED_STATUS) from None
        raise stop


def cli() -> None:
    """Console-script entry point (``robocds``): user errors end in one line, exit status 2."""
    run_cli(main, PROG)
