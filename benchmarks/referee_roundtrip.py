"""One distilled set in three forms, judged alike: our file, its ImageFolder export, and the same images written
by hand in MTT/DATM's tensor layout (normalised with CIFAR-10's statistics, ZCA-whitened, ``images_best.pt`` +
``labels_best.pt``). Same config, same seeds: the accuracies should agree within noise.

    python benchmarks/referee_roundtrip.py FILE CONFIG OUT_DIR [key=value ...]

Writes OUT_DIR/{imagefolder,mtt,eval-*}/ and prints one JSON line per form (and OUT_DIR/roundtrip.json).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from latentdistill.config import load_config
from latentdistill.export import read_distilled
from latentdistill.export.folders import export_set
from latentdistill.export.sets import SetSource
from latentdistill.run_folder import RunFolder
from latentdistill.tasks.classification import ClassificationTask
from latentdistill.workflows import run_evaluate
from latentdistill.workflows.common import autoencoder_of, setup


def write_mtt_layout(distilled, config, folder: Path) -> None:
    """The images as MTT saves them: normalised, whitened with the ZCA of the training rows (ours: MTT fits
    kornia's on all 50,000), float32; hard labels int64."""
    task = ClassificationTask(config)
    data = task.prepare(autoencoder_of(config), torch.device("cpu"), progress=False)
    whitened = task.normalize(data)(distilled.images.float() / 255)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(whitened.contiguous(), folder / "images_best.pt")
    torch.save(distilled.labels.clone(), folder / "labels_best.pt")


def main(file: str, config_path: str, out: str, *overrides: str) -> None:
    out_dir = Path(out)
    config = load_config(config_path, list(overrides))
    setup(config)
    distilled = read_distilled(file)
    export_set(distilled, "imagefolder", out_dir / "imagefolder", progress=False)
    write_mtt_layout(distilled, config, out_dir / "mtt")
    forms = {"file": (Path(file), None), "imagefolder": (out_dir / "imagefolder", None),
             "mtt": (out_dir / "mtt" / "images_best.pt", SetSource(normalization="cifar10", zca_eps=0.1))}
    results = {}
    for name, (path, source) in forms.items():
        started = time.perf_counter()
        report = run_evaluate(path, config, RunFolder(out_dir / f"eval-{name}"), progress=False, source=source)
        rows = report["networks"]["convnet"]
        results[name] = {row: {"mean": values["mean"], "std": values["std"], "runs": values["runs"]}
                         for row, values in rows.items() if isinstance(values, dict) and "runs" in values}
        results[name]["minutes"] = round((time.perf_counter() - started) / 60, 2)
        results[name]["storage_image_equivalent"] = report["storage"]["image_equivalent"]
        print(json.dumps({"form": name, **results[name]}), flush=True)
    (out_dir / "roundtrip.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
