"""``hydra/launcher=local_gpus`` (featlab's conf; this registers ``featlab_local_gpus``): a sweep on one workstation, N jobs at once, one GPU each.

Without SLURM, Hydra's basic launcher runs one job at a time on every GPU (featlab's ``trainer=ddp``).
For sweeps of small runs it is faster to run one job per GPU side by side. This launcher keeps a job
on each listed device (``hydra.launcher.devices``, default: every visible GPU;
``jobs_per_device`` > 1 shares one), starting the next job on a device as soon as its job ends. Each
job is a submitit local process whose ``CUDA_VISIBLE_DEVICES`` holds its one device, so inside it
``trainer=gpu`` sees exactly one GPU. Results come back in job order, failures included, as with
every Hydra launcher (Optuna works on top of it).
"""

# No ``from __future__ import annotations``: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import MISSING

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
except ImportError:  # without the 'sweeps' extra the launcher is simply not offered (no warning per run)
    BaseSubmititLauncher = None

log = logging.getLogger(__name__)


@dataclass
class LocalGPUsLauncherConf:
    _target_: str = "hydra_plugins.featlab_local_gpus.local_gpus_launcher.LocalGPUsLauncher"
    devices: Any = None                # GPU ids, e.g. [0, 1, 2, 3]; null: every visible GPU
    jobs_per_device: int = 1           # jobs sharing one device (small runs that leave a GPU idle)
    timeout_min: int = 7 * 24 * 60     # per job; submitit sends SIGUSR2 then SIGTERM at the end
    signal_delay_s: int = 120          # warning time before the timeout (CheckpointOnSignal saves)
    poll_s: float = 1.0                # how often finished jobs are collected
    submitit_folder: str = MISSING


def visible_gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count()))


if BaseSubmititLauncher is not None:
    ConfigStore.instance().store(
        group="hydra/launcher",
        name="featlab_local_gpus",
        node=LocalGPUsLauncherConf(submitit_folder="${hydra.sweep.dir}/.submitit/%j"),
        provider="featlab",
    )


class LocalGPUsLauncher(BaseSubmititLauncher or object):
    _EXECUTOR = "local"

    def device_slots(self) -> list[int]:
        devices = self.params.get("devices")
        devices = visible_gpus() if devices is None else [int(d) for d in devices]
        per_device = int(self.params.get("jobs_per_device", 1))
        if not devices or per_device < 1:
            from featlab.errors import ConfigError

            raise ConfigError("hydra.launcher.devices", "no GPU to run on: list device ids, e.g. "
                                                        "hydra.launcher.devices=[0,1], and jobs_per_device >= 1")
        return [device for device in devices for _ in range(per_device)]

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        assert self.config is not None
        slots = self.device_slots()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("local_gpus: %d jobs on devices %s, output dir %s", len(job_overrides), sorted(set(slots)), sweep_dir)
        waiting = list(enumerate(job_overrides, start=initial_job_idx))
        running: dict[int, tuple[int, Any]] = {}  # slot -> (job index, submitit job)
        results: dict[int, JobReturn] = {}
        while waiting or running:
            for slot, device in enumerate(slots):
                if slot in running or not waiting:
                    continue
                index, overrides = waiting.pop(0)
                executor = submitit.LocalExecutor(folder=self.params["submitit_folder"])
                executor.update_parameters(timeout_min=int(self.params.get("timeout_min", 7 * 24 * 60)),
                                           signal_delay_s=int(self.params.get("signal_delay_s", 120)),
                                           gpus_per_node=1, visible_gpus=[device])
                log.info("\t#%d on device %d: %s", index, device, " ".join(filter_overrides(overrides)))
                job = executor.submit(self, list(overrides), "hydra.sweep.dir", index, f"job_id_for_{index}",
                                      Singleton.get_state())
                running[slot] = (index, job)
            for slot, (index, job) in list(running.items()):
                if job.done():
                    results[index] = job.results()[0]
                    del running[slot]
            if running:
                time.sleep(float(self.params.get("poll_s", 1.0)))
        return [results[index] for index in sorted(results)]
