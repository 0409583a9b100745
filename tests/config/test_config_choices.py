"""Unknown config-group options fail as one line naming the group and its valid options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from featlab.config import check_config_choices
from featlab.errors import ConfigError


@pytest.mark.parametrize("args", [["experiment=sisr_dino", "net=edsr"], ["-m", "net=espcn,edsr", "+sweep=dino_head_dim"],
                                  ["net=choice(espcn,edsr)", "data.batch_size=4", "loss=null"]])
def test_known_options_sweeps_and_plain_keys_pass(args):
    check_config_choices(args)


@pytest.mark.parametrize(("args", "group", "bad"), [(["experiment=nope"], "experiment", "nope"),
                                                    (["-m", "net=espcn,edsrr"], "net", "edsrr"),
                                                    (["+sweep=typo"], "sweep", "typo")])
def test_unknown_options_name_the_group_and_list_the_valid_ones(args, group, bad):
    with pytest.raises(ConfigError, match=rf"^{group}: unknown {group} config '{bad}'. Valid: .*\w"):
        check_config_choices(args)


@pytest.mark.slow
def test_train_py_reports_a_typo_in_one_line_with_exit_2():
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "train.py", "experiment=sisr_dinoo"], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "experiment: unknown experiment config 'sisr_dinoo'" in lines[0] and "sisr_dino," in lines[0]
