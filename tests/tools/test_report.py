"""The study report: rows per swept value, best marked, failures kept, byte-identical reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from scipy import stats

from featlab.errors import ConfigError
from featlab.tools.report import find_runs, main, write_report

MONITOR = {"task": {"monitor": {"metric": "val/psnr", "mode": "max"}}, "study": "toy"}


def make_run(run_dir: Path, overrides: list[str], psnr: float | None, status: str = "finished",
             history: bool = True, write_results: bool = True) -> Path:
    """A run folder as train.py + Hydra leave it: .hydra/overrides.yaml, results.json, csv/metrics.csv."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    if write_results:
        metrics = {} if psnr is None else {"val/psnr": psnr, "val/ssim": psnr / 100, "val/set5/psnr": psnr}
        results = {"status": status, "error": "ConfigError: data.hr_crop: too large\nmore" if status == "failed"
                   else None, "metrics": metrics,
                   "speed": {"images_per_s": 12.345, "step_ms": 81.0, "peak_memory_mb": 512.4},
                   "global_step": 4, "wall_time_s": 3.21, "git_commit": "abc123",
                   "config": {**MONITOR, "seed": 0, "overrides": overrides}}  # train.yaml default seed
        (run_dir / "results.json").write_text(json.dumps(results))
    if history and psnr is not None:
        (run_dir / "csv").mkdir()
        rows = ["epoch,step,train/loss_step,val/psnr",
                "0,0,0.5,", "0,1,0.4,", f"0,1,,{psnr - 1}", "1,3,0.3,", f"1,3,,{psnr}"]
        (run_dir / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run_dir


def make_sweep(root: Path) -> Path:
    """A 2 (params x) x 3 (command-line w) launch: one job failed, one died silently, one never ran."""
    sweep = root / "multirun-1"
    sweep.mkdir(parents=True)
    launch = {"hydra": {"sweeper": {"params": {"x": "0.5,0.05"}},
                        "overrides": {"task": ["+sweep=toy", "w=a,b,10", "data.hr_crop=32"]}}}
    OmegaConf.save(OmegaConf.create(launch), sweep / "multirun.yaml")
    jobs = [("0.5", "a", 30.0, "finished"), ("0.5", "b", 31.5, "finished"), ("0.05", "a", 29.0, "finished"),
            ("0.05", "b", None, "failed"), ("0.5", "10", 28.0, "finished")]
    for num, (x, w, psnr, status) in enumerate(jobs):
        overrides = [f"x={x}", f"w={w}", "+sweep=toy", "data.hr_crop=32"]
        make_run(sweep / f"{num}_+sweep=toy,w={w},x={x}", overrides, psnr, status)
    make_run(sweep / "5_+sweep=toy,w=zz,x=0.5", ["x=0.5", "w=zz", "+sweep=toy", "data.hr_crop=32"], None,
             write_results=False)
    return sweep


def table_rows(markdown: str, section: str = "## Final metrics") -> list[list[str]]:
    lines = markdown.split(section)[1].split("\n\n")[1].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def config_rows(markdown: str) -> list[list[str]]:
    return table_rows(markdown, "## Per configuration")


def test_table_has_a_row_per_job_sorted_by_swept_value_with_best_and_failures(tmp_path):
    sweep = make_sweep(tmp_path)
    out = write_report([sweep], out=tmp_path / "report" / "report.md")
    markdown = out.read_text()
    rows = table_rows(markdown)
    header = markdown.split("## Final metrics")[1].split("\n\n")[1].splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")][:5] == ["run", "x", "w", "status", "val/psnr"]
    # numeric order for x (0.05 < 0.5), numbers before words for w, then label
    assert [(r[1], r[2]) for r in rows] == [("0.05", "10"), ("0.05", "a"), ("0.05", "b"), ("0.5", "10"),
                                            ("0.5", "a"), ("0.5", "b"), ("0.5", "zz")]
    by_values = {(r[1], r[2]): r for r in rows}
    assert by_values[("0.5", "b")][4] == "31.5000"  # the highest, but one seed: never starred
    assert not any("★" in cell for row in config_rows(markdown) + rows for cell in row)
    assert by_values[("0.05", "b")][3] == "**failed**"
    assert by_values[("0.05", "10")][:4] == ["(not run)", "0.05", "10", "**missing**"]  # never launched
    assert by_values[("0.5", "zz")][3] == "**missing**"  # folder but no results.json
    assert by_values[("0.5", "a")][0] == "0"  # Hydra's job number as the label
    assert "val/ssim" in header and "val/set5/psnr" not in header  # stage-level extra metrics only
    assert by_values[("0.5", "a")][-5:] == ["12.3", "81.0", "512", "4", "3.2"]
    assert "- Best: none named (inconclusive: fewer than 3 seeds in 7 of 7 configurations" in markdown
    configs = {tuple(r[:2]): r for r in config_rows(markdown)}
    assert configs[("0.5", "b")][2:4] == ["1 (0)", "31.5000 (1 seed, no interval)"]
    assert configs[("0.05", "b")][2:4] == ["0", "—"] and configs[("0.05", "b")][-1] == "1"  # the failed job
    assert "ConfigError: data.hr_crop: too large" in markdown and "more" not in markdown.split("## Failed")[1]
    assert "python train.py -m +sweep=toy w=a,b,10 data.hr_crop=32" in markdown
    assert (out.parent / "report_val_psnr.png").is_file() and (out.parent / "report_curves.png").is_file()
    assert "![Training curves](report_curves.png)" in markdown


def test_same_inputs_give_identical_markdown_and_png_bytes(tmp_path):
    sweep = make_sweep(tmp_path / "runs")
    first = write_report([sweep], out=tmp_path / "a" / "report.md")
    second = write_report([sweep], out=tmp_path / "b" / "report.md")
    for name in ("report.md", "report_val_psnr.png", "report_curves.png"):
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name
    assert b"Software" not in (first.parent / "report_val_psnr.png").read_bytes()


def test_plain_run_dirs_are_compared_on_the_overrides_that_differ(tmp_path):
    dirs = [make_run(tmp_path / f"r{i}", ["experiment=sisr_l1", f"loss.pixel.weight={w}"], psnr, history=False)
            for i, (w, psnr) in enumerate([(2, 20.0), (1, 25.0)])]
    out = write_report([str(d) for d in dirs], out=tmp_path / "r.md", metric="val/ssim", mode="min")
    rows = table_rows(out.read_text())
    assert [r[:2] for r in rows] == [["r1", "1"], ["r0", "2"]]
    assert rows[1][3] == "0.2000" and "lower is better" in out.read_text()
    assert not (tmp_path / "r_curves.png").exists()  # no history, no curve plot


def test_runs_that_differ_only_by_seed_are_one_configuration_with_a_t_interval(tmp_path):
    for i, psnr in enumerate([25.0, 26.0, 21.0]):
        make_run(tmp_path / f"r{i}", [f"seed={i}"], psnr, history=False)
    markdown = write_report([tmp_path], out=tmp_path / "r.md", columns=["val/set5/psnr"]).read_text()
    assert [r[0] for r in table_rows(markdown)] == ["r0", "r1", "r2"]  # every run still has its row
    (row,) = config_rows(markdown)
    half = stats.t.ppf(0.975, 2) * stats.tstd([25.0, 26.0, 21.0]) / 3 ** 0.5  # independent route
    assert row[:3] == ["3 (0, 1, 2)", f"24.0000 ± {half:.4f}", f"[{24 - half:.4f}, {24 + half:.4f}]"]
    assert row[3] == "24.0000"  # the chosen column's mean over seeds
    assert "- Best: none named (one configuration (all runs): nothing to rank)" in markdown
    assert "| val/set5/psnr |" in markdown and "val/ssim" not in markdown


def test_a_best_is_starred_only_when_three_seeds_each_separate(tmp_path):
    scores = {"a": [30.0, 30.2, 30.1], "b": [28.0, 28.1, 27.9], "c": [29.0, 29.3, 29.1]}
    for name, values in scores.items():
        for seed, psnr in enumerate(values):
            make_run(tmp_path / f"{name}{seed}", [f"net={name}", f"seed={seed}"], psnr, history=False)
    markdown = write_report([tmp_path], out=tmp_path / "r.md").read_text()
    assert ("- **Best: net=a: its 95% interval separates from every other configuration's** "
            "(val/psnr = 30.1000 ± 0.2484, 3 seeds)") in markdown
    starred = [r[0] for r in config_rows(markdown) if "★" in r[2]]
    assert starred == ["a"]
    header = markdown.split("## Per configuration")[1].split("\n\n")[1].splitlines()[0]
    assert header.startswith("| net | seeds |")  # the seed names no configuration


def test_a_results_file_path_and_a_parent_folder_are_accepted(tmp_path):
    run = make_run(tmp_path / "study" / "run", ["a=1"], 10.0)
    assert [r.label for r in find_runs([run / "results.json"])[0]] == ["run"]
    assert [r.status for r in find_runs([tmp_path])[0]] == ["finished"]


def test_nothing_to_report_is_one_line_naming_the_argument(tmp_path, capsys):
    with pytest.raises(ConfigError, match="runs: no results.json"):
        write_report([tmp_path])
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_plots_and_report_go_to_a_wandb_run_as_media(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    sweep = make_sweep(tmp_path / "runs")
    out = tmp_path / "report" / "report.md"
    main([str(sweep), "--out", str(out), "--wandb", "featlab-test"])
    assert "W&B: wandb sync " in capsys.readouterr().out
    (run_dir,) = (out.parent / "wandb").glob("offline-run-*")
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(images) == 2  # the metric plot and the training curves
    assert (run_dir / "files" / "report.md").read_text() == out.read_text()
