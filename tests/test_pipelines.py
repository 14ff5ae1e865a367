"""The scripts users launch: ``accelerate launch pipelines/distill.py`` and the plain pipelines."""

import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

from helpers import REPO, make_tiny_base, tiny_overrides


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_accelerate_launch_distill_then_evaluate(tmp_path):
    base = make_tiny_base(tmp_path)
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(base, run_dir, iterations=2)
    launcher = Path(sys.executable).with_name("accelerate")
    launched = run([str(launcher), "launch", "--num_processes", "1", "--cpu", "pipelines/distill.py",
                    "--config", "configs/smoke.yaml", *overrides])
    assert launched.returncode == 0, launched.stderr[-2000:]
    output = run_dir / "distilled.safetensors"
    with safe_open(output, framework="pt") as file:
        assert file.get_slice("latents").get_shape()[0] == 3  # ipc 1, three classes
    evaluated = run([sys.executable, "pipelines/evaluate.py", str(output), "evaluate.runs=1", "evaluate.epochs=1"])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert (run_dir / "report.json").is_file()


def test_pipeline_errors_are_one_line(tmp_path):
    broken = run([sys.executable, "pipelines/encode.py", "--config", "configs/smoke.yaml", "distill.ipcc=3"])
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines() == ["error: unknown config key 'distill.ipcc' (did you mean distill.ipc?)"]
