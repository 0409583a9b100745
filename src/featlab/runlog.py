"""``train.log``: the one file in a run directory that holds what the console shows.

Attached by ``featlab.train.run`` for the length of a run, whether Hydra started it or not, so a
SLURM job, a ``nohup`` run and a test all leave the same record: featlab's messages and Lightning's
(its logger may not propagate to the root). Python warnings stay on stderr only: recording them
would mean replacing ``warnings.showwarning`` process-wide, which libraries and pytest also patch.
Hydra's own job-log file is switched off in ``conf/hydra/default.yaml`` so that nothing writes the
file twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_LOG_NAME = "train.log"
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"
# Loggers that keep their own console handler and do not propagate: they get the file handler too.
NON_PROPAGATING = ("lightning.pytorch", "lightning.fabric")

_current: logging.FileHandler | None = None


def record(logger_name: str, level: int, message: str) -> None:
    """Write one line to the run's ``train.log`` only (not the console); nothing outside a run."""
    if _current is not None:
        _current.handle(logging.LogRecord(logger_name, level, __file__, 0, message, None, None))


@contextmanager
def run_log(run_dir: str | Path) -> Iterator[Path]:
    """Append everything logged during the block to ``<run_dir>/train.log`` (a resumed run continues it)."""
    global _current
    path = Path(run_dir) / RUN_LOG_NAME
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    featlab = logging.getLogger("featlab")
    saved_level = featlab.level
    if featlab.getEffectiveLevel() > logging.INFO:  # outside Hydra the root stays at WARNING
        featlab.setLevel(logging.INFO)
    targets = [logging.getLogger()] + [logging.getLogger(n) for n in NON_PROPAGATING
                                        if not logging.getLogger(n).propagate]
    for logger in targets:
        logger.addHandler(handler)
    previous, _current = _current, handler
    try:
        yield path
    finally:
        _current = previous
        for logger in targets:
            logger.removeHandler(handler)
        featlab.setLevel(saved_level)
        handler.close()
