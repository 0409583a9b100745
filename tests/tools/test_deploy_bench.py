"""The deployment bench runs every path on real nets and reports what it measured (never timings as
pass/fail: speed belongs to the bench, not to tests)."""

from __future__ import annotations

import json
import math

import pytest

from featlab.errors import ConfigError
from featlab.tools.deploy_bench import (
    MIN_FIDELITY_DB,
    DeployBenchArgs,
    NetResult,
    PathResult,
    best_path,
    main,
    run,
)


def test_espcn_and_swinir_light_at_published_size(tmp_path):
    out = tmp_path / "bench.json"
    results = run(DeployBenchArgs(nets="espcn_x4,swinir_light_x4", paths="eager,channels_last,onnxruntime,bf16,int8",
                                  lr_tiles="16", warmup=0, repeats=1, output=str(out)))
    by_net = {r.net: r for r in results}
    swinir, espcn = by_net["swinir_light_x4"], by_net["espcn_x4"]
    assert swinir.params == 929_628 and swinir.tile == 16  # the official SwinIR-light x4 count
    for res in results:
        assert res.paths["reference"].speedup == 1.0 and not res.real_weights
        for fp32 in ("eager", "channels_last", "onnxruntime"):
            assert res.paths[fp32].max_abs_diff < 1e-4, fp32
        assert res.paths["onnxruntime"].ms > 0 and "Conv" in res.onnx_ops
        bf16 = res.paths["bf16"]  # bf16 rounds: close to fp32, not equal
        assert 0 < bf16.max_abs_diff < 0.1 and 30 < bf16.fidelity_db < 100 and bf16.psnr_loss_db is not None
    assert espcn.paths["eager"].note == "= reference"  # no second formulation: not timed twice
    assert swinir.paths["eager"].ms is not None and swinir.paths["eager"].note == ""
    assert "LayerNormalization" in swinir.onnx_nonportable_ops and "Conv" not in swinir.onnx_nonportable_ops
    assert "int8" in swinir.paths and swinir.paths["int8"].psnr_loss_db is not None
    assert espcn.paths["int8"].ms is None and "does not apply" in espcn.paths["int8"].note
    saved = json.loads(out.read_text())
    assert [r["net"] for r in saved["results"]] == ["espcn_x4", "swinir_light_x4"]
    table = out.with_suffix(".md").read_text()
    assert "| SwinIR-light x4 | 929,628 | 16 |" in table and "cores" in table


def test_best_path_respects_the_accuracy_goal():
    res = NetResult("x", "x", 1, 8, real_weights=True, paths={
        "reference": PathResult(ms=10.0, speedup=1.0, max_abs_diff=0.0),
        "compile": PathResult(ms=2.0, speedup=5.0, max_abs_diff=1e-2),       # fast but inaccurate
        "onnxruntime": PathResult(ms=5.0, speedup=2.0, max_abs_diff=1e-6),
        "int8": PathResult(ms=4.0, speedup=2.5, psnr_loss_db=0.3, fidelity_db=60.0),  # costs too much PSNR
    })
    assert best_path(res) == ("onnxruntime", 2.0)
    res.paths["int8"].psnr_loss_db = 0.05
    assert best_path(res) == ("int8", 2.5)


def test_random_weights_judge_reduced_precision_by_fidelity():
    """With random weights the PSNR against HR is meaningless (its loss reads ~0 whatever the
    error), so the fidelity bound decides; it is the uncorrelated-error bound for a 35 dB model."""
    assert pytest.approx(35 + 16.33, abs=0.01) == MIN_FIDELITY_DB
    loss_at_bound = 10 * math.log10(1 + 10 ** ((35 - MIN_FIDELITY_DB) / 10))
    assert loss_at_bound == pytest.approx(0.1, abs=1e-9)
    res = NetResult("x", "x", 1, 8, paths={
        "reference": PathResult(ms=10.0, speedup=1.0, max_abs_diff=0.0),
        "bf16": PathResult(ms=2.0, speedup=5.0, max_abs_diff=3e-3, psnr_loss_db=0.0, fidelity_db=45.0),
    })
    assert best_path(res) == ("reference", 1.0)
    res.paths["bf16"].fidelity_db = 55.0
    assert best_path(res) == ("bf16", 5.0)


@pytest.mark.parametrize("argv, key", [(["nets=vgg"], "nets"), (["paths=tensorrt"], "paths"),
                                       (["nets=rrdb_x4,edsr_x4", "weights=x.pth"], "weights")])
def test_bad_keys_are_one_line(argv, key, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err


def test_unknown_net_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="rrdb_x4"):
        run(DeployBenchArgs(nets="nope"))
