"""``hydra/launcher=local_gpus``: jobs run side by side, one device each, the next job starting on a
device when its job ends (CPU test with a fake device list: only CUDA_VISIBLE_DEVICES is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

APP = textwrap.dedent('''
    import json, os, pathlib, time
    import hydra

    @hydra.main(version_base=None, config_path=None)
    def main(cfg):
        start = time.time()
        time.sleep(1.5)
        record = {"x": cfg.x, "devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}
        pathlib.Path(cfg.out, f"job{cfg.x}.json").write_text(json.dumps(record))
        return cfg.x * 10

    if __name__ == "__main__":
        main()
''')


@pytest.mark.slow
def test_four_jobs_on_two_devices(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, str(tmp_path / "app.py"), "-m", "+x=1,2,3,4", f"+out={out}",
               "hydra/launcher=featlab_local_gpus", "hydra.launcher.devices=[3,5]", "hydra.launcher.poll_s=0.2",
               f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = [json.loads((out / f"job{x}.json").read_text()) for x in (1, 2, 3, 4)]
    assert sorted({job["devices"] for job in jobs}) == ["3", "5"]  # one device each, both used
    # never two jobs on one device at once
    for device in ("3", "5"):
        spans = sorted((job["start"], job["end"]) for job in jobs if job["devices"] == device)
        assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:]))
    # and the two devices worked at the same time
    first = {job["devices"]: job for job in jobs if job["x"] in (1, 2)}
    assert first["3"]["start"] < first["5"]["end"] and first["5"]["start"] < first["3"]["end"]


def test_no_devices_is_one_line(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    command = [sys.executable, str(tmp_path / "app.py"), "-m", "+x=1", f"+out={tmp_path}",
               "hydra/launcher=featlab_local_gpus", "hydra.launcher.devices=[]", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "hydra.launcher.devices" in done.stderr
