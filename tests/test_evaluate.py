import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentdistill import workflows
from latentdistill.config import AugmentConfig, EvaluateConfig, load_config
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.baselines import BaselineCache
from latentdistill.evaluate.classification import (
    accuracy,
    random_real_subset,
    summarize,
    train_classifier,
)
from latentdistill.runtime import Normalize

from helpers import CLASSES, COLOURS, RESOLUTION, make_tiny_base, tiny_overrides

NORMALIZE = Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])


def colour_images(per_class: int, seed: int, size: int = RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable data: each class its constant colour (brightest in channel ``label``) plus a little noise, uint8."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        base = torch.tensor(COLOURS[name], dtype=torch.float32).view(1, 3, 1, 1)
        noisy = base + 20 * torch.randn(per_class, 3, size, size, generator=generator)
        images.append(noisy.clamp(0, 255).round().to(torch.uint8))
        labels += [label] * per_class
    return torch.cat(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny distilled file (3 classes, ipc 2, 2 iterations) from a run on the tiny image folder, and the
    overrides of that run's config (which an evaluation must be given: it reads no paths from the file)."""
    base = make_tiny_base(tmp_path_factory.mktemp("evaluate"))
    overrides = [*tiny_overrides(base, base / "run", ipc=2, iterations=2), "evaluate.batch_size=8"]
    output = workflows.run_distill(load_config(None, overrides), progress=False)
    return output, [o for o in overrides if not o.startswith("output_dir=")]


@pytest.fixture(scope="module")
def tiny_distilled(tiny_run):
    return tiny_run[0]


def evaluate(tiny_run, *overrides: str) -> tuple[dict, Path]:
    """``workflows.run_evaluate`` as the CLI calls it without output_dir: a fresh folder beside the file."""
    file, run_overrides = tiny_run
    config = load_config(None, [*run_overrides, *overrides])
    report = workflows.run_evaluate(file, config, progress=False)
    folders = sorted(file.parent.glob("evaluation-*"), key=lambda p: int(p.name.split("-")[1]))
    return report, folders[-1] / "report.json"


def test_train_classifier_learns_separable_data():
    train_images, train_labels = colour_images(10, seed=0)
    test_images, test_labels = colour_images(5, seed=1)
    config = EvaluateConfig(epochs=15, batch_size=10, lr=0.01)
    device = torch.device("cpu")
    net = train_classifier(ClassifierTraining(train_images, train_labels, 3, NORMALIZE, None, 0, device), config)
    assert accuracy(net, test_images, test_labels, NORMALIZE, device) >= 90.0
    # batch size of the test pass does not change the answer
    assert accuracy(net, test_images, test_labels, NORMALIZE, device, batch_size=4) == \
        accuracy(net, test_images, test_labels, NORMALIZE, device)
    # an untrained-on-these-labels check: permuted labels score low on the true ones
    assert accuracy(net, test_images, (test_labels + 1) % 3, NORMALIZE, device) <= 10.0


def test_train_classifier_is_seed_deterministic_with_dsa():
    images, labels = colour_images(4, seed=0)
    config = EvaluateConfig(epochs=2, batch_size=6)
    augment = DifferentiableAugment(AugmentConfig())
    device = torch.device("cpu")
    first = train_classifier(ClassifierTraining(images, labels, 3, NORMALIZE, augment, 5, device), config)
    second = train_classifier(ClassifierTraining(images, labels, 3, NORMALIZE, augment, 5, device), config)
    third = train_classifier(ClassifierTraining(images, labels, 3, NORMALIZE, augment, 6, device), config)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.state_dict().values(), third.state_dict().values()))


def test_accuracy_counts_exactly():
    class Fixed(torch.nn.Module):
        """Predicts the class from the brightest channel: right on colour images, by construction."""

        def forward(self, images):
            return images.mean(dim=(2, 3))

    images, labels = colour_images(4, seed=0)
    identity = Normalize([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    device = torch.device("cpu")
    assert accuracy(Fixed(), images, labels, identity, device) == 100.0
    wrong = labels.clone()
    wrong[:3] = (wrong[:3] + 1) % 3
    assert accuracy(Fixed(), images, wrong, identity, device, batch_size=5) == pytest.approx(100.0 * 9 / 12)


def test_random_real_subset_picks_ipc_per_class_from_given_rows():
    labels = torch.arange(3).repeat_interleave(10)
    rows = torch.tensor([r for r in range(30) if r % 10 not in (0, 1)])  # rows 0,1 of each class held out
    chosen = random_real_subset(labels, rows, ipc=3, seed=0)
    assert len(chosen) == 9
    assert set(chosen.tolist()) <= set(rows.tolist())
    assert len(set(chosen.tolist())) == 9
    assert torch.bincount(labels[chosen], minlength=3).tolist() == [3, 3, 3]
    assert torch.equal(random_real_subset(labels, rows, ipc=3, seed=0), chosen)
    assert not torch.equal(random_real_subset(labels, rows, ipc=3, seed=1), chosen)
    # all rows of a class when ipc exceeds what is there
    assert len(random_real_subset(labels, rows, ipc=50, seed=0)) == len(rows)


def test_summarize():
    assert summarize([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "runs": [1.0, 2.0, 3.0]}
    assert summarize([42.0]) == {"mean": 42.0, "std": 0.0, "runs": [42.0]}
    rounded = summarize([10.004, 20.126])
    assert rounded["mean"] == 15.07 and rounded["runs"] == [10.0, 20.13]
    assert rounded["std"] == round(float(np.std([10.004, 20.126], ddof=1)), 2)


def test_run_evaluate_writes_a_report_and_leaves_the_file_alone(tiny_run):
    file = tiny_run[0]
    before = file.read_bytes()
    report, path = evaluate(tiny_run)
    assert path == file.parent / "evaluation-1" / "report.json"
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(report))
    for key in ("dataset", "ipc", "protocol", "networks", "distilled_file"):
        assert key in written, key
    assert written["dataset"] == "tinyset"
    assert written["ipc"] == 2
    assert written["protocol"]["epochs"] == 2 and written["protocol"]["batch_size"] == 8
    assert written["protocol"]["nets"] == ["convnet"]
    assert list(written["networks"]) == ["convnet"]
    for name in ("distilled", "random_real"):
        summary = written["networks"]["convnet"][name]
        assert set(summary) >= {"mean", "std", "runs"}
        assert len(summary["runs"]) == 1  # evaluate.runs from the given config
        assert all(0.0 <= value <= 100.0 for value in summary["runs"])
        assert summary["mean"] == summary["runs"][0] and summary["std"] == 0.0
        assert len(summary["validation"]["runs"]) == 1
    assert file.read_bytes() == before  # the judged file is never rewritten
    assert (path.parent / "config.yaml").is_file()
    # a second evaluation takes a new folder: no earlier report is overwritten
    _, second = evaluate(tiny_run, "evaluate.runs=1")
    assert second.parent.name != path.parent.name and json.loads(path.read_text()) == written


def test_run_evaluate_runs_follow_overrides(tiny_run):
    report, _ = evaluate(tiny_run, "evaluate.runs=2", "evaluate.random_real=false")
    row = report["networks"]["convnet"]
    assert len(row["distilled"]["runs"]) == 2
    assert "random_real" not in row
    with pytest.raises(LatentDistillError, match="evaluate.runz"):
        evaluate(tiny_run, "evaluate.runz=2")


def test_cross_architecture_evaluation_with_scores_and_reused_baselines(tiny_run, capsys, tmp_path):
    tiny_distilled, run_overrides = tiny_run
    overrides = ["evaluate.runs=2", "evaluate.full_data=true", "evaluate.full_epochs=1", "evaluate.without_augment=true"]
    from latentdistill.cli import main

    out = tmp_path / "cross"
    assert main(["--no-progress", "evaluate", str(tiny_distilled), "--nets", "convnet,vit", *run_overrides, *overrides,
                 f"output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert list(report["networks"]) == ["convnet", "vit"] and report["protocol"]["nets"] == ["convnet", "vit"]
    for net in ("convnet", "vit"):
        row = report["networks"][net]
        assert set(row) == {"distilled", "random_real", "full", "distilled_no_augment", "random_real_no_augment", "scores"}
        assert all(len(row[name]["runs"]) == 2 for name in row if name != "scores")
        mean = {name: row[name]["mean"] / 100 for name in row if name != "scores"}
        lrs = row["scores"]["label_robust"]
        assert lrs["ior"] == pytest.approx(mean["distilled"] - mean["random_real"], abs=1e-4)
        assert lrs["hlr"] == pytest.approx(mean["full"] - mean["distilled"], abs=1e-4)
        assert 0 <= lrs["score"] <= 1 and 0 <= row["scores"]["augmentation_robust"]["score"] <= 1
        assert f"| {net} |" in printed
    assert "LRS" in printed and "ARS" in printed
    # the baselines were kept beside the latent cache; a second evaluation reuses them exactly
    cache = json.loads(next((tiny_distilled.parents[1] / "cache").rglob("baselines.json")).read_text())
    assert len(cache) >= 2 * 3 * 2  # 2 nets x (random real with/without augmentation, full) x 2 runs
    again, _ = evaluate(tiny_run, "evaluate.nets=[convnet,vit]", *overrides)
    for net in ("convnet", "vit"):
        for name in ("random_real", "full", "random_real_no_augment"):
            assert again["networks"][net][name] == report["networks"][net][name]
    # an explicit output_dir that already holds a report is refused, and nothing is trained or written
    assert main(["--no-progress", "evaluate", str(tiny_distilled), *run_overrides, f"output_dir={out}"]) == 2
    assert "report.json already exists" in capsys.readouterr().err


def test_unknown_evaluation_network_is_refused_before_training(tiny_distilled, capsys):
    from latentdistill.cli import main

    assert main(["--no-progress", "evaluate", str(tiny_distilled), "--nets", "convnet,resnet50"]) == 2
    assert "evaluate.nets" in capsys.readouterr().err


def test_baseline_caches_sharing_a_file_keep_each_others_entries(tmp_path):
    """Evaluations running at once each hold the file as it was when they started; none may drop what
    another wrote meanwhile."""
    path = tmp_path / "baselines.json"
    first, second = BaselineCache(path), BaselineCache(path)
    first.put("a", {"accuracy": 1})
    second.put("b", {"accuracy": 2})
    first.put("c", {"accuracy": 3})
    assert json.loads(path.read_text()) == {"a": {"accuracy": 1}, "b": {"accuracy": 2}, "c": {"accuracy": 3}}
    path.write_text("{not json")
    BaselineCache(path).put("d", {"accuracy": 4})  # a damaged file only costs the entries it held
    assert json.loads(path.read_text()) == {"d": {"accuracy": 4}}
