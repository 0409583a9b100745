import json
from types import SimpleNamespace

import pytest
import torch

from featlab.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from featlab.callbacks.results import ResultsWriter
from featlab.callbacks.throughput import batch_size_of
from featlab.cli import exit_on_user_error
from featlab.errors import ConfigError, unknown_name, user_error_in
from featlab.visualize import grid_from_columns, save_png


def test_nan_guard_names_the_term():
    guard = NaNGuard(every_n_steps=1)
    module = SimpleNamespace(loss_terms={"total": torch.tensor(float("nan")), "pixel": torch.tensor(0.1),
                                         "perceptual": torch.tensor(float("inf"))})
    trainer = SimpleNamespace(global_step=3)
    with pytest.raises(NonFiniteLossError, match="'perceptual'.*step 3"):
        guard.on_train_batch_end(trainer, module, None, None, 0)
    module.loss_terms = {"total": torch.tensor(1.0), "pixel": torch.tensor(1.0)}
    guard.on_train_batch_end(trainer, module, None, None, 0)  # finite: no error


def test_results_writer_records_failure(tmp_path):
    writer = ResultsWriter(tmp_path, {"seed": 1})
    writer.on_exception(None, None, RuntimeError("boom"))
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["status"] == "failed" and "boom" in data["error"] and data["config"] == {"seed": 1}


def test_grid_layout_and_png(tmp_path):
    lr, hr = torch.rand(3, 3, 4, 4), torch.rand(3, 3, 8, 8)
    grid = grid_from_columns({"lr": lr, "hr": hr}, max_rows=2)
    assert grid.shape == (3, 16, 16)
    assert torch.equal(grid[:, :8, 8:], hr[0])                   # row 0, column 1 is HR image 0
    assert torch.equal(grid[:, 8:10, 0:2], lr[1, :, :1, :1].expand(3, 2, 2))  # nearest upscaling
    path = save_png(grid, tmp_path / "g.png")
    assert path.stat().st_size > 0


def test_batch_size_of_nested():
    assert batch_size_of({"lr": torch.zeros(5, 3, 2, 2), "name": ["a"] * 5}) == 5
    assert batch_size_of([torch.zeros(7, 1)]) == 7


def test_user_errors_are_found_through_wrappers(capsys):
    inner = unknown_name("net", "edsr2", ["edsr", "rdn"])
    try:
        try:
            raise inner
        except ConfigError as err:
            raise RuntimeError("Error in call to target") from err
    except RuntimeError as wrapped:
        assert user_error_in(wrapped) is inner

    def fail():
        raise RuntimeError("wrapped") from inner

    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(fail)
    assert exit_info.value.code == 2
    assert "net: unknown name 'edsr2'. Valid: edsr, rdn" in capsys.readouterr().err


def test_knn_evaluation_follows_the_trainer_limits():
    """limit_val/test_batches cut the kNN bank and query like any evaluation: whole batches, or a
    fraction, spread evenly over the (class-ordered) set so every class keeps its share."""
    from torch.utils.data import TensorDataset

    from featlab.callbacks.knn import limited

    labels = torch.arange(10).repeat_interleave(10)           # 10 classes x 10, ordered by class
    data = TensorDataset(torch.zeros(100, 1), labels)
    assert limited(data, None, 8) is data and limited(data, 1.0, 8) is data and limited(data, 20, 8) is data
    two_batches = limited(data, 2, 8)
    kept = torch.stack([two_batches[i][1] for i in range(len(two_batches))])
    assert len(two_batches) == 16 and set(kept.tolist()) == set(range(10))
    assert len(limited(data, 0.25, 8)) == 25


def test_knn_gain_is_over_the_runs_own_init_also_after_a_resume():
    """The initial kNN travels in the checkpoint: a resumed run neither re-measures nor forgets it."""
    from types import SimpleNamespace

    from featlab.callbacks.knn import KNNEval

    class Module:
        def __init__(self):
            self.logged: dict[str, float] = {}

        def log(self, name, value, **_):
            self.logged[name] = value

    scores = iter([0.10, 0.25, 0.40])  # before training, after epoch 1, after epoch 2 (resumed run)
    trainer = SimpleNamespace(current_epoch=0, max_epochs=2, fast_dev_run=False)

    def fake_evaluate(self, trainer, pl_module):
        return {"knn_top1": next(scores)}

    first, module = KNNEval(every_n_epochs=1), Module()
    first.evaluate = fake_evaluate.__get__(first)
    first.on_train_start(trainer, module)
    first.on_train_epoch_end(trainer, module)
    assert module.logged["val/knn_top1_init"] == 0.10
    assert module.logged["val/knn_top1_gain"] == pytest.approx(0.15)

    resumed, module = KNNEval(every_n_epochs=1), Module()
    resumed.load_state_dict(first.state_dict())
    resumed.evaluate = fake_evaluate.__get__(resumed)
    resumed.on_train_start(trainer, module)  # must not spend a score on re-measuring the init
    trainer.current_epoch = 1
    resumed.on_train_epoch_end(trainer, module)
    assert module.logged["val/knn_top1_init"] == 0.10
    assert module.logged["val/knn_top1"] == 0.40 and module.logged["val/knn_top1_gain"] == pytest.approx(0.30)
