"""Plain progress lines: the interval rule on a fake clock, and a real non-terminal run's train.log."""

from __future__ import annotations

import logging
import re

import pytest

from featlab.callbacks import progress
from featlab.callbacks.progress import Interval, ProgressLog, Rate, format_duration
from featlab.errors import ConfigError
from featlab.runlog import run_log


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_interval_fires_once_per_period_whatever_the_steps():
    clock = FakeClock()
    interval = Interval(every_s=30, every_n_steps=None, clock=clock)
    clock.now += 29.9
    assert not interval.due(500)
    clock.now += 0.1
    assert interval.due(501)
    assert not interval.due(502)  # restarted at the line just written
    clock.now += 45
    assert interval.due(503)
    clock.now += 29
    assert not interval.due(10_000)


def test_step_interval_and_either_rule():
    clock = FakeClock()
    steps = Interval(every_s=None, every_n_steps=10, clock=clock)
    assert [s for s in range(1, 35) if steps.due(s)] == [10, 20, 30]
    both = Interval(every_s=60, every_n_steps=100, clock=clock)
    clock.now += 61
    assert both.due(5)                       # time first
    assert not both.due(50)
    assert both.due(105)                     # then 100 steps after the last line
    both.restart(200)
    assert not both.due(299) and both.due(300)


@pytest.mark.parametrize("kwargs", [{"every_s": 0, "every_n_steps": None}, {"every_s": None, "every_n_steps": 0},
                                    {"every_s": None, "every_n_steps": None}])
def test_interval_rejects_impossible_settings(kwargs):
    with pytest.raises(ConfigError, match="callbacks.progress"):
        Interval(**kwargs)


def test_rate_and_eta_from_the_clock():
    clock = FakeClock()
    rate = Rate(clock)
    rate.start(100)                          # e.g. a resumed run starting at step 100
    assert rate.per_second(100) != rate.per_second(100)  # NaN: nothing measured yet
    clock.now += 20
    assert rate.per_second(140) == pytest.approx(2.0)
    assert rate.eta(140, 1000) == pytest.approx(430.0)
    assert format_duration(430) == "07:10" and format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"


def test_console_mode_follows_the_terminal(monkeypatch):
    monkeypatch.setattr(progress, "stdout_is_terminal", lambda: True)
    assert not ProgressLog(console="auto").to_console and ProgressLog(console="always").to_console
    monkeypatch.setattr(progress, "stdout_is_terminal", lambda: False)
    assert ProgressLog(console="auto").to_console and not ProgressLog(console="never").to_console
    with pytest.raises(ConfigError, match="callbacks.progress.console"):
        ProgressLog(console="sometimes")


def test_run_log_collects_featlab_and_lightning_messages(tmp_path):
    with run_log(tmp_path) as path:
        logging.getLogger("featlab.somewhere").info("hello from featlab")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("hello from lightning")
    logging.getLogger("featlab.somewhere").info("after the run: not recorded")
    text = path.read_text()
    assert "hello from featlab" in text and "hello from lightning" in text
    assert "not recorded" not in text


PROGRESS_LINE = re.compile(r"train epoch (\d+)/2 step (\d+)/4 \(\d+%\) \S+ it/s ETA [\d:?]+ \| val/psnr=")


@pytest.mark.slow
def test_a_run_without_a_terminal_writes_progress_lines_to_train_log(train_run, monkeypatch, capsys):
    monkeypatch.setattr(progress, "stdout_is_terminal", lambda: False)
    overrides = ["experiment=sisr_l1", "net=espcn", "data.hr_crop=32", "data.batch_size=2", "data.repeat=1",
                 "data.val_max_size=48", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                 "trainer.enable_progress_bar=true", "callbacks.progress.every_n_steps=1"]
    results, run_dir = train_run(overrides)
    assert results["status"] == "finished"
    log_text = (run_dir / "train.log").read_text()
    steps = [int(m.group(2)) for m in PROGRESS_LINE.finditer(log_text)]
    assert steps[:4] == [1, 2, 3, 4], log_text          # one line per step (every_n_steps=1)
    assert "end of epoch 2/2 step 4/4 (100%)" in log_text and "test stage: 1 batch" in log_text
    captured = capsys.readouterr()  # the bar (asked for, but not a terminal) was off: no carriage returns
    assert "\r" not in captured.out + captured.err


@pytest.mark.slow
def test_in_a_terminal_the_bar_keeps_the_console_and_train_log_gets_the_lines(train_run, monkeypatch, caplog):
    monkeypatch.setattr(progress, "stdout_is_terminal", lambda: True)
    overrides = ["experiment=sisr_l1", "net=espcn", "data.hr_crop=32", "data.batch_size=2", "data.repeat=1",
                 "data.val_max_size=48", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "test_after_fit=false", "callbacks.progress.every_n_steps=1"]
    with caplog.at_level(logging.INFO, logger="featlab"):
        results, run_dir = train_run(overrides)
    assert results["status"] == "finished"
    assert "train epoch 1/1 step 2/2" in (run_dir / "train.log").read_text()
    assert not any("train epoch" in r.getMessage() for r in caplog.records)  # not on the console loggers
