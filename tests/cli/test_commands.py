"""The ``featlab`` console script: subcommands, ``--help`` everywhere, user config folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from featlab.commands import COMMANDS, main
from featlab.config import check_config_choices, compose, config_dir, user_config_dirs
from featlab.errors import ConfigError

# A key each subcommand's help must document (with its default where it has one).
HELP_MENTIONS = {
    "train": ["pretrained=true", "experiment:", "seed=0"],
    "eval": ["ckpt_path=???", "output=null"],
    "upscale": ["ckpt_path=???", "tile=128", "blend=feather"],
    "export": ["output=model.onnx", "opset=18", "atol=0.001"],
    "bench": ["steps: 20", "variants: [base]", "sisr_perceptual"],
    "deploy-bench": ["nets=all", "lr_tiles=64,256", "repeats=5"],
    "report": ["--metric", "--out"],
    "paired-identification": ["--baseline", "--out"],
    "fit-recognizer": ["out=???", "epochs=40", "margin=0.35"],
    "movi-convert": ["--every", "dst"],
}


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # Hydra's and argparse's --help exit themselves
        return int(stop.code or 0)


def test_every_subcommand_has_a_help_check():
    assert set(HELP_MENTIONS) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    assert run_main([name, "--help"]) == 0
    out = capsys.readouterr().out
    for text in HELP_MENTIONS[name]:
        assert text in out, f"{name} --help does not mention {text!r}"
    if name not in ("report", "paired-identification", "movi-convert"):  # argparse's own format
        assert "featlab " + name in out


def test_key_value_tools_document_every_key(capsys):
    from featlab.cli import field_docs
    from featlab.tools.deploy_bench import DeployBenchArgs
    from featlab.tools.export_onnx import ExportArgs
    from featlab.tools.upscale import UpscaleArgs

    for schema in (UpscaleArgs, ExportArgs, DeployBenchArgs):
        docs = field_docs(schema)
        assert set(docs) == set(schema.__dataclass_fields__), schema


def test_unknown_subcommand_lists_the_valid_ones(capsys):
    assert run_main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "'trian'" in err and "train" in err and "upscale" in err


def test_no_subcommand_prints_usage(capsys):
    assert run_main([]) == 2
    assert "subcommands:" in capsys.readouterr().out
    assert run_main(["--help"]) == 0


def test_wrong_key_of_a_tool_is_one_line(capsys):
    assert run_main(["upscale", "ckpt_path=x", "input=y", "output=z", "tiles=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tiles" in err


def test_configs_come_from_the_package():
    import featlab

    assert config_dir() == Path(featlab.__file__).parent / "conf"
    assert (config_dir() / "train.yaml").is_file() and (config_dir() / "__init__.py").is_file()


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_espcn.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /net: espcn\n  - override /loss: l1\nstudy: mine\n")
    return tmp_path


def test_user_config_dir_adds_experiments(user_dir):
    dirs = user_config_dirs(["experiment=my_espcn", "--config-dir", str(user_dir)])
    assert dirs == [user_dir.resolve()]
    check_config_choices(["experiment=my_espcn"], dirs)
    cfg = compose(["experiment=my_espcn", f"hydra.searchpath=[file://{user_dir}]"])
    assert cfg.study == "mine" and cfg.net._target_.endswith("ESPCN")
    with pytest.raises(ConfigError, match="my_espcn"):  # the valid options include the user's
        check_config_choices(["experiment=my_espcm"], dirs)


def test_missing_user_config_dir_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match="--config-dir: user config dir .*nope.* does not exist"):
        user_config_dirs(["--config-dir", str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="hydra.searchpath"):
        user_config_dirs([f"hydra.searchpath=[file://{tmp_path / 'nope'}]"])


def test_shadowed_user_config_is_named(user_dir, capsys):
    (user_dir / "experiment" / "sisr_l1.yaml").write_text("# @package _global_\nstudy: mine\n")
    user_config_dirs([f"--config-dir={user_dir}"])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "experiment/sisr_l1.yaml" in err and "my_espcn" not in err


def test_train_cli_exits_2_on_missing_config_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["train", "--config-dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
