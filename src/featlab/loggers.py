"""CSV always; W&B online when credentials exist, offline otherwise, never an interactive prompt.

Inside a Hydra multirun every job is one W&B run of one W&B group per launch (``<study>-<launch>``),
named after its swept values and tagged with them, so W&B's grouping, table and parallel-coordinates
views separate the runs of one sweep without hand edits. Which keys were swept is read from the
launch itself (the sweeper's ``params`` plus the command line saved in ``multirun.yaml``); the report
tool uses the same functions, so the W&B names and the report's rows always agree.
"""

from __future__ import annotations

import csv
import json
import logging
import netrc
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from featlab.errors import ConfigError, require
from featlab.files import atomic_open, atomic_path, ensure_dir, write_text

log = logging.getLogger(__name__)

MAX_TAG_LENGTH = 64  # W&B rejects longer tags
MAX_TAGS = 64
MAX_NAME_LENGTH = 128
MULTIRUN_FILE = "multirun.yaml"  # written by Hydra's sweepers into the sweep dir before any job starts


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``: W&B tables and parallel coordinates want flat keys."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


# -- which keys a sweep varies --------------------------------------------------------------------
def override_key(override: str) -> str:
    """``'++loss.perceptual.weight=0.5' -> 'loss.perceptual.weight'`` (add/force/delete prefixes dropped)."""
    return override.split("=", 1)[0].lstrip("+~")


def override_items(overrides: Sequence[str]) -> dict[str, str]:
    """``['a=1', '+b=x', 'a=2'] -> {'a': '2', 'b': 'x'}``: the last value of a key wins, as in Hydra."""
    items: dict[str, str] = {}
    for override in overrides:
        if "=" in override:
            items[override_key(override)] = override.split("=", 1)[1]
    return items


def _is_sweep(override: str) -> bool:
    """Whether a launch override expands into several jobs (``a=1,2``, ``range()``, ``interval()``...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except Exception:  # a glob over a config group needs Hydra's config loader: judge by the comma
        value = override.split("=", 1)[-1]
        return "," in value and not value.lstrip().startswith(("[", "{", "'", '"'))


def swept_keys(params: Mapping[str, Any] | None, launch_overrides: Sequence[str]) -> list[str]:
    """Keys a launch varies: the sweeper's ``params`` then the command line, the command line winning.

    Hydra's basic sweeper lets a single command-line value replace a swept param (``x=7`` turns a
    param sweep over ``x`` off), so a key counts as swept only if its last definition is a sweep.
    """
    final: dict[str, bool] = {}
    for key, value in (params or {}).items():
        final[str(key)] = _is_sweep(f"{key}={value}")
    for override in launch_overrides:
        if "=" in override:
            final[override_key(override)] = _is_sweep(override)
    return [key for key, swept in final.items() if swept]


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix that still tells the keys apart: ``loss.perceptual.weight -> weight``."""
    names: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            candidate = ".".join(parts[-depth:])
            clashes = [k for k in keys if k != key and (k == candidate or k.endswith("." + candidate))]
            if not clashes:
                break
        names[key] = candidate
    return names


def job_name(swept: Mapping[str, str]) -> str:
    """``{'loss.perceptual.weight': '0.05'} -> 'weight=0.05'``: a W&B run name made of swept values."""
    names = short_names(list(swept))
    text = ",".join(f"{names[key]}={value}" for key, value in swept.items())
    return re.sub(r"[^\w.,=+\-\[\]]+", "_", text)[:MAX_NAME_LENGTH]


def read_launch(sweep_dir: str | Path) -> tuple[dict[str, Any], list[str]]:
    """(sweeper params, command-line overrides) of the launch that wrote ``sweep_dir/multirun.yaml``."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        return {}, []
    from omegaconf import OmegaConf

    launch = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    hydra_cfg = launch.get("hydra", {}) if isinstance(launch, dict) else {}
    params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
    overrides = list((hydra_cfg.get("overrides") or {}).get("task") or [])
    return {str(k): v for k, v in params.items()}, [str(o) for o in overrides]


@dataclass(frozen=True)
class SweepIdentity:
    """Where one multirun job sits in its sweep: the W&B group, run name and swept values."""

    group: str
    name: str
    swept: dict[str, str] = field(default_factory=dict)
    job_num: int | None = None

    @property
    def tags(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.swept.items()]

    def flat_config(self) -> dict[str, Any]:
        """Extra flat config keys so W&B can filter on the launch and on what it swept."""
        return {"sweep.group": self.group, "sweep.keys": ",".join(self.swept), "sweep.job_num": self.job_num}


def sweep_identity_for(study: str, sweep_dir: str | Path, job_overrides: Sequence[str],
                       params: Mapping[str, Any] | None = None, launch_overrides: Sequence[str] | None = None,
                       job_num: int | None = None) -> SweepIdentity:
    """The identity of one job; ``params``/``launch_overrides`` default to the sweep dir's multirun.yaml."""
    if params is None and launch_overrides is None:
        params, launch_overrides = read_launch(sweep_dir)
    keys = swept_keys(params, launch_overrides or [])
    values = override_items(job_overrides)
    swept = {key: values[key] for key in keys if key in values}
    launch = Path(sweep_dir).name.removeprefix("multirun-")
    name = job_name(swept) if swept else f"job{job_num if job_num is not None else 0}"
    return SweepIdentity(group=f"{study}-{launch}", name=name, swept=swept, job_num=job_num)


def hydra_sweep_identity(study: str) -> SweepIdentity | None:
    """The running job's identity when it is part of a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    params, launch = read_launch(hc.sweep.dir)
    if not params and not launch:  # no multirun.yaml (custom launcher): the job's own sweeper params
        params = dict(hc.sweeper.get("params") or {})
    return sweep_identity_for(study, hc.sweep.dir, list(hc.overrides.task), params, launch,
                              job_num=hc.job.get("num"))


# -- W&B mode ---------------------------------------------------------------------------------------
def wandb_credentials_present() -> bool:
    """True when an API key is in the environment or in ~/.netrc, i.e. online logging can work."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(requested: str) -> str:
    """``auto`` resolves to online with credentials, offline without."""
    if requested != "auto":
        return requested
    return "online" if wandb_credentials_present() else "offline"


def _clean_tags(tags: Sequence[str]) -> list[str]:
    """Unique, non-empty tags within W&B's length limits, first occurrence kept."""
    seen: dict[str, None] = {}
    for tag in tags:
        text = str(tag).strip()[:MAX_TAG_LENGTH]
        if text:
            seen.setdefault(text, None)
    return list(seen)[:MAX_TAGS]


WANDB_ID_FILE = "wandb_run_id"  # in the run dir: a resumed run logs to the same W&B run


class AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps what earlier attempts of the run wrote.

    Lightning's deletes ``metrics.csv`` when the folder is not empty, so a resumed run lost its
    history; this one reads the rows back, drops those a resume will log again
    (:meth:`drop_after`), and rewrites the whole file atomically on each save.
    """

    def __init__(self, log_dir: str) -> None:  # not super().__init__: that deletes metrics.csv
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        ensure_dir(log_dir)
        self.rows: list[dict[str, Any]] = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                self.metrics_keys = sorted(reader.fieldnames or [])
                self.rows = [row for row in reader if None not in row]  # a torn last line is dropped

    def drop_after(self, step: int) -> None:
        """Forget rows logged after ``step``: the resumed run logs those steps again."""
        def row_step(row: Mapping[str, Any]) -> float:
            try:
                return float(row.get("step") or 0)
            except ValueError:
                return 0.0
        self.rows = [row for row in self.rows if row_step(row) <= step]

    def log_hparams(self, params: dict[str, Any]) -> None:
        from lightning.pytorch.core.saving import save_hparams_to_yaml

        self.hparams.update(params)
        with atomic_path(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)) as tmp:
            save_hparams_to_yaml(tmp, self.hparams)

    def save(self) -> None:
        if not self.metrics:
            return
        self._record_new_keys()
        self.rows.extend(self.metrics)
        self.metrics = []
        with atomic_open(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(self.rows)


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose history survives resumes (see :class:`AppendingCSVWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingCSVWriter:
        if self._experiment is None:
            self._experiment = AppendingCSVWriter(self.log_dir)
        return self._experiment


def wandb_run_id(run_dir: str | Path) -> str:
    """The W&B run id of this run dir: made once, read back by every resume of the run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        existing = path.read_text().strip()
        if re.fullmatch(r"[a-z0-9]{8,64}", existing):
            return existing
    run_id = secrets.token_hex(8)
    write_text(path, run_id + "\n")
    return run_id


def build_loggers(
    run_dir: str | Path,
    csv: bool = True,
    wandb: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    flat_config: Mapping[str, Any] | None = None,
    sweep: SweepIdentity | None | Literal["auto"] = "auto",
    extra: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> list[Logger]:
    """Loggers for one run; the W&B run is grouped by study and tagged with its swept values.

    ``extra`` adds any Lightning logger from config (``{name: {_target_: ..., ...}}``, null entries
    skipped); a ``save_dir`` left out or null becomes the run dir. ``wandb.log_model`` uploads
    checkpoints as W&B artifacts (``true``: at the end, ``all``: every save).

    ``sweep="auto"`` asks Hydra whether this is a multirun job: if so, the group becomes the launch
    (``<group>-<launch time>``) and the name the job's swept values, because a name made of every
    override would repeat the fixed ones in each run and hide what differs.
    """
    run_dir = Path(run_dir)
    loggers: list[Logger] = []
    if csv:
        loggers.append(AppendingCSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if wandb and wandb.get("enabled", True):
        if sweep == "auto":
            sweep = hydra_sweep_identity(group or "default")
        config = dict(flat_config or {})
        if sweep is not None:
            run_name, group = sweep.name, sweep.group
            tags = [*sweep.tags, *tags]
            config.update(sweep.flat_config())
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")
        from lightning.pytorch.loggers import WandbLogger

        mode = wandb_mode(str(wandb.get("mode", "auto")))
        logger = WandbLogger(
            project=wandb.get("project", "featlab"),
            entity=wandb.get("entity"),
            name=run_name,
            group=group,
            tags=_clean_tags(tags),
            save_dir=str(run_dir),
            mode=mode,
            config=config,
            settings=wandb_settings(),
            # one W&B run per run dir: a resumed run continues it (offline runs keep the id for sync)
            id=wandb_run_id(run_dir),
            resume="allow" if mode == "online" else None,  # offline + resume writes an empty record
            log_model=wandb.get("log_model", False),
        )
        logger.featlab_mode = mode  # type: ignore[attr-defined]
        loggers.append(logger)
    for name, entry in (extra or {}).items():
        if entry is not None:
            loggers.append(_instantiate_logger(name, entry, run_dir))
    return loggers


def _instantiate_logger(name: str, entry: Mapping[str, Any], run_dir: Path) -> Logger:
    """One ``logger.extra.<name>`` entry, written under the run dir unless it says otherwise."""
    from hydra.utils import instantiate

    require("_target_" in entry, f"logger.extra.{name}", "needs _target_ (e.g. lightning.pytorch.loggers."
                                                        "TensorBoardLogger)")
    entry = dict(entry)
    if entry.get("save_dir") is None:
        entry["save_dir"] = str(run_dir)
    try:
        logger = instantiate(entry)
    except Exception as err:  # a wrong target or argument is the user's to fix: one line
        raise ConfigError(f"logger.extra.{name}", f"cannot build {entry['_target_']}: "
                                                  f"{str(err).splitlines()[0][:200]}") from err
    require(isinstance(logger, Logger), f"logger.extra.{name}",
            f"{entry['_target_']} is not a Lightning logger ({type(logger).__name__})")
    return logger


def wandb_settings():
    """Quiet W&B: no console capture, no system-stats thread (a 2-core CPU run feels the latter)."""
    import wandb

    return wandb.Settings(silent=True, console="off", x_disable_stats=True)


def results_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """``results.json`` without its config (already the run's config), flat under ``results.``."""
    body = {k: v for k, v in results.items() if k != "config"}
    return {f"results.{key}": value for key, value in flatten(body).items()}


def _read_results(save_dir: str | None) -> dict[str, Any] | None:
    path = Path(save_dir or "") / "results.json"
    if not save_dir or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class WandbRun:
    """Where a finished W&B run is: its page (online) or the command that uploads it (offline)."""

    url: str | None = None
    sync_command: str | None = None


def finish_wandb(loggers: Sequence[Logger], results: Mapping[str, Any] | None = None) -> WandbRun | None:
    """End the W&B run of this job (multirun jobs otherwise share one run); say where it is.

    ``results`` (default: the run dir's ``results.json``) becomes the W&B run summary, and a failed
    run is finished with exit code 1 so W&B marks it failed. Only rank 0 owns a W&B run under DDP;
    other ranks return without touching it. None when there is no W&B logger.
    """
    if rank_zero_only.rank != 0:
        return None
    found = None
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        experiment = logger.experiment
        summary = results if results is not None else _read_results(getattr(logger, "save_dir", None))
        failed = False
        if summary:
            experiment.summary.update(results_summary(summary))
            failed = summary.get("status") == "failed"
        run_dir = getattr(experiment, "dir", None)
        if getattr(logger, "featlab_mode", "") == "offline" and isinstance(run_dir, str) and run_dir:
            found = WandbRun(sync_command=f"wandb sync {Path(run_dir).parent.resolve()}")
        else:
            found = WandbRun(url=getattr(experiment, "url", None))  # read before finish()
        experiment.finish(exit_code=1 if failed else 0)
    return found
