"""Sets from any method, judged alike: an ImageFolder, an image safetensors file and MTT/DATM's tensors read
through ``export.sets``; our sets exported as an ImageFolder and a Hugging Face dataset and read back."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from latentdistill import workflows
from latentdistill.cli import main
from latentdistill.config import load_config
from latentdistill.errors import LatentDistillError
from latentdistill.export import read_distilled
from latentdistill.export.folders import export_set
from latentdistill.export.sets import SetSource, read_set
from latentdistill.run_folder import RunFolder
from latentdistill.runtime import STATISTICS, Normalize
from latentdistill.tasks import build_task
from latentdistill.workflows.common import autoencoder_of

from helpers import CLASSES, RESOLUTION, make_tiny_base, one_line, tiny_overrides

MEAN, STD = STATISTICS["cifar10"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny distilled file with soft labels written in, and the config overrides to evaluate it."""
    base = make_tiny_base(tmp_path_factory.mktemp("any_set"))
    overrides = [*tiny_overrides(base, base / "run", ipc=2, iterations=2), "evaluate.batch_size=8", "evaluate.epochs=4",
                 "evaluate.runs=2"]
    file = workflows.run_distill(load_config(None, overrides), progress=False)
    return file, [o for o in overrides if not o.startswith("output_dir=")], base


def evaluate(tiny, path, folder: Path, *overrides: str, source: SetSource | None = None) -> dict:
    config = load_config(None, [*tiny[1], *overrides])
    return workflows.run_evaluate(path, config, RunFolder(folder), progress=False, source=source)


def accuracies(report: dict) -> dict:
    """Each network's rows (distilled, random real, ...), every run's test accuracy."""
    return {net: {row: values["runs"] for row, values in rows.items() if isinstance(values, dict) and "runs" in values}
            for net, rows in report["networks"].items()}


def test_imagefolder_export_evaluates_like_the_file(tiny, tmp_path):
    file, _, _ = tiny
    folder = export_set(read_distilled(file), "imagefolder", tmp_path / "set", progress=False)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == list(CLASSES)
    assert json.loads((folder / "metadata.json").read_text())["classes"] == list(CLASSES)
    original = evaluate(tiny, file, tmp_path / "a")
    exported = evaluate(tiny, folder, tmp_path / "b")
    assert accuracies(exported) == accuracies(original)  # lossless PNGs in the file's row order: the same runs
    # the exported set stores images, which is what its storage line counts
    assert exported["storage"]["counted"] == ["images"] and exported["storage"]["image_equivalent"] == 2.0


def test_mtt_tensors_evaluate_like_the_file(tiny, tmp_path):
    file, _, _ = tiny
    distilled = read_distilled(file)
    normalized = Normalize(MEAN, STD)(distilled.images.float() / 255)
    torch.save(normalized, tmp_path / "images_best.pt")
    torch.save(distilled.labels, tmp_path / "labels_best.pt")
    original = evaluate(tiny, file, tmp_path / "a")
    mtt = evaluate(tiny, tmp_path / "images_best.pt", tmp_path / "b", source=SetSource(normalization="cifar10"))
    for row in ("distilled", "random_real"):  # float pixels, unrounded: at most a test image apart per run
        pairs = zip(accuracies(mtt)["convnet"][row], accuracies(original)["convnet"][row])
        assert all(abs(a - b) <= 100 / 12 + 1e-6 for a, b in pairs)
    assert any("names no classes" in note for note in mtt["notes"])
    assert mtt["storage"]["image_equivalent"] == 8.0  # 2 float32 images per class: 4 uint8 images each


def test_whitened_tensors_are_unwhitened_with_the_real_data_zca(tiny, tmp_path):
    file, _, base = tiny
    distilled = read_distilled(file)
    named = ["data.zca=true", "data.mean=cifar10", "data.std=cifar10"]  # as MTT whitens: CIFAR-10's statistics
    config = load_config(None, [*tiny[1], *named])
    task = build_task(config)
    data = task.prepare(autoencoder_of(config), torch.device("cpu"), progress=False)
    whitened = task.normalize(data)(distilled.images.float() / 255)
    torch.save(whitened, tmp_path / "images_best.pt")
    torch.save(distilled.labels, tmp_path / "labels_best.pt")
    source = SetSource(normalization="cifar10", zca_eps=0.1)
    read = read_set(tmp_path / "images_best.pt", source, list(CLASSES), RESOLUTION)
    assert read.metadata["whitened"]["eps"] == 0.1
    from latentdistill.export.sets import unwhiten

    assert torch.allclose(unwhiten(read, data.zca), distilled.images.float(), atol=1e-2)
    report = evaluate(tiny, tmp_path / "images_best.pt", tmp_path / "b", *named, source=source)
    assert report["protocol"]["zca"]["eps"] == 0.1


def test_image_safetensors_with_soft_labels(tiny, tmp_path):
    file, _, _ = tiny
    distilled = read_distilled(file)
    soft = torch.nn.functional.one_hot(distilled.labels, 3).float() * 0.7 + 0.1
    save_file({"images": distilled.images, "labels": soft}, tmp_path / "set.safetensors", metadata={"classes": json.dumps(list(CLASSES))})
    read = read_set(tmp_path / "set.safetensors", SetSource(), list(CLASSES), RESOLUTION)
    assert torch.equal(read.labels, distilled.labels) and torch.allclose(read.soft_labels, soft)
    report = evaluate(tiny, tmp_path / "set.safetensors", tmp_path / "b", "evaluate.labels=soft", "evaluate.random_real=false")
    assert "distilled_soft" in report["networks"]["convnet"]
    # logits (DATM's labels_best.pt) become probabilities through a softmax
    save_file({"images": distilled.images, "labels": soft.log() * 3}, tmp_path / "logits.safetensors")
    logits = read_set(tmp_path / "logits.safetensors", SetSource(), list(CLASSES), RESOLUTION)
    assert torch.allclose(logits.soft_labels.sum(1), torch.ones(len(soft)))


def test_hf_export_loads_with_class_names(tiny, tmp_path):
    datasets = pytest.importorskip("datasets")
    file, _, _ = tiny
    distilled = read_distilled(file)
    export_set(distilled, "hf", tmp_path / "hf", progress=False)
    dataset = datasets.load_from_disk(str(tmp_path / "hf"))
    assert dataset.features["label"].names == list(CLASSES) and len(dataset) == len(distilled.labels)
    first = torch.from_numpy(np.array(dataset[0]["image"])).permute(2, 0, 1)
    assert torch.equal(first, distilled.images[0]) and dataset[0]["label"] == int(distilled.labels[0])
    assert json.loads(dataset.info.description)["classes"] == list(CLASSES)


def write_pair(folder: Path, images, labels) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(images, folder / "images_best.pt")
    torch.save(labels, folder / "labels_best.pt")
    return folder / "images_best.pt"


BAD_SETS = {
    "one channel": (torch.zeros(6, 1, RESOLUTION, RESOLUTION), torch.arange(6) % 3, "must be (N, 3, H, W)"),
    "wrong size": (torch.zeros(6, 3, 8, 8), torch.arange(6) % 3, "'data.resolution' is 16"),
    "label out of range": (torch.zeros(6, 3, RESOLUTION, RESOLUTION), torch.arange(6), "outside the real data's 3 classes"),
    "label count": (torch.zeros(6, 3, RESOLUTION, RESOLUTION), torch.arange(5) % 3, "5 labels for 6 images"),
    "nan pixels": (torch.full((6, 3, RESOLUTION, RESOLUTION), float("nan")), torch.arange(6) % 3, "non-finite"),
    "soft label shape": (torch.zeros(6, 3, RESOLUTION, RESOLUTION), torch.rand(6, 4), "soft labels must be (6, 3)"),
    "float labels 1-d": (torch.zeros(6, 3, RESOLUTION, RESOLUTION), torch.rand(6), "labels must be integer (N,)"),
    "uint16 labels": (torch.zeros(6, 3, RESOLUTION, RESOLUTION), (torch.arange(6) % 3).to(torch.uint16), "int8-64 or uint8"),
    "bool labels": (torch.zeros(6, 3, RESOLUTION, RESOLUTION), torch.ones(6, dtype=torch.bool), "int8-64 or uint8"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETS))
def test_bad_tensor_sets_are_one_line_errors(tmp_path, case):
    images, labels, expected = BAD_SETS[case]
    path = write_pair(tmp_path, images, labels)
    with pytest.raises(LatentDistillError) as error:
        read_set(path, SetSource(normalization="cifar10"), list(CLASSES), RESOLUTION)
    assert expected in one_line(error) and str(tmp_path) in str(error.value)


def test_bad_sources_are_one_line_errors(tmp_path):
    images, labels = torch.zeros(6, 3, RESOLUTION, RESOLUTION), torch.arange(6) % 3
    path = write_pair(tmp_path / "a", images, labels)
    cases = {
        "say how they are normalised": SetSource(),
        "unknown normalisation 'cifar11'": SetSource(normalization="cifar11"),
        "3 positive stds": SetSource(normalization="0,0,0/1,0,1"),
    }
    for expected, source in cases.items():
        with pytest.raises(LatentDistillError) as error:
            read_set(path, source, list(CLASSES), RESOLUTION)
        assert expected in one_line(error)
    torch.save({"images": images}, tmp_path / "a" / "labels_best.pt")  # a dict, not a tensor
    with pytest.raises(LatentDistillError, match="holds a dict, not a tensor"):
        read_set(path, SetSource(normalization="cifar10"), list(CLASSES), RESOLUTION)
    (tmp_path / "a" / "labels_best.pt").write_bytes(b"not a torch file")
    with pytest.raises(LatentDistillError, match="torch.load"):
        read_set(path, SetSource(normalization="cifar10"), list(CLASSES), RESOLUTION)
    save_file({"images": images.to(torch.uint8), "labels": labels}, tmp_path / "named.safetensors",
              metadata={"classes": json.dumps(["x", "y", "z"])})
    with pytest.raises(LatentDistillError) as error:
        read_set(tmp_path / "named.safetensors", SetSource(), list(CLASSES), RESOLUTION)
    assert "names classes ['x', 'y', 'z']; the real data has" in one_line(error)
    save_file({"images": images.to(torch.uint8)}, tmp_path / "nolabels.safetensors")
    with pytest.raises(LatentDistillError, match="no 'labels' tensor"):
        read_set(tmp_path / "nolabels.safetensors", SetSource(), list(CLASSES), RESOLUTION)


def test_bad_image_folders_are_one_line_errors(tiny, tmp_path):
    file, _, _ = tiny
    folder = export_set(read_distilled(file), "imagefolder", tmp_path / "set", progress=False)
    (folder / CLASSES[0]).rename(folder / "renamed")
    with pytest.raises(LatentDistillError) as error:
        read_set(folder, SetSource(), list(CLASSES), RESOLUTION)
    assert "has class folders" in one_line(error)
    (folder / "renamed").rename(folder / CLASSES[0])
    first = sorted((folder / CLASSES[0]).iterdir())[0]
    first.write_bytes(b"not a png")
    with pytest.raises(LatentDistillError) as error:
        read_set(folder, SetSource(), list(CLASSES), RESOLUTION)
    assert first.name in one_line(error)


def test_export_never_overwrites_and_leaves_nothing_half_made(tiny, tmp_path, capsys):
    file, _, _ = tiny
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["export", str(file), "--to", "imagefolder", str(target)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err and (target / "keep.txt").read_text() == "mine"
    assert main(["export", str(file), "--to", "zip", str(tmp_path / "z")]) == 2
    assert "unknown export target 'zip'" in capsys.readouterr().err
    assert main(["--no-progress", "export", str(file), "--to", "imagefolder", str(tmp_path / "new")]) == 0
    assert not list(tmp_path.glob(".*partial"))
    assert len(list((tmp_path / "new").rglob("*.png"))) == len(read_distilled(file).labels)


def test_compare_puts_runs_side_by_side(tiny, tmp_path, capsys):
    file, _, _ = tiny
    evaluate(tiny, file, tmp_path / "a")
    exported = export_set(read_distilled(file), "imagefolder", tmp_path / "set", progress=False)
    evaluate(tiny, exported, tmp_path / "b")
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "report.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run | dataset | IPC |") and "convnet distilled" in table[0] and len(table) == 4
    assert main(["compare", "--csv", str(tmp_path / "a")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("run,dataset,IPC") and len(rows) == 2
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "report.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "report.json is not a readable report" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "none")]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_config_verb_prints_the_resolved_config(capsys):
    assert main(["config", "distill.ipc=7", "data.mean=cifar10"]) == 0
    printed = capsys.readouterr().out
    assert "ipc: 7" in printed and "- 0.4914" in printed and "std: auto" in printed
    assert main(["config", "distill.ipcc=7"]) == 2
    assert "unknown config key 'distill.ipcc'" in capsys.readouterr().err


def test_prepare_offline_says_what_to_download(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["--no-progress", "prepare", "cifar10", str(tmp_path / "cifar10")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "cifar-10-binary.tar.gz" in error and "--archive" in error


def test_probability_rows_stay_probabilities_and_logits_become_them(tmp_path):
    images = torch.zeros(2, 3, RESOLUTION, RESOLUTION, dtype=torch.uint8)
    rows = torch.tensor([[0.91, 0.05, 0.04], [0.2, 0.3, 0.5]]).to(torch.bfloat16)  # sums a little off 1 in bf16
    save_file({"images": images, "labels": rows}, tmp_path / "bf16.safetensors")
    read = read_set(tmp_path / "bf16.safetensors", SetSource(), list(CLASSES), RESOLUTION)
    assert read.soft_labels[0, 0] > 0.9 and torch.allclose(read.soft_labels.sum(1), torch.ones(2))


def test_hostile_label_and_metadata_files_are_one_line_errors(tiny, tmp_path):
    file, _, _ = tiny
    distilled = read_distilled(file)
    distilled.soft_labels = torch.full((len(distilled.labels), 3), 1 / 3)
    folder = export_set(distilled, "imagefolder", tmp_path / "set", progress=False)
    good = json.loads((folder / "labels.json").read_text())
    name = next(iter(good["soft_labels"]))
    cases = {"must map each image file": {"soft_labels": None}, "must be 3 numbers": {"soft_labels": {
        **good["soft_labels"], name: [1, "x", 0]}}, "no soft label for": {"soft_labels": {}}}
    for expected, content in cases.items():
        (folder / "labels.json").write_text(json.dumps(content))
        with pytest.raises(LatentDistillError) as error:
            read_set(folder, SetSource(), list(CLASSES), RESOLUTION)
        assert expected in one_line(error)
    (folder / "labels.json").write_text(json.dumps(good))
    # metadata.json says nothing about how PNGs are stored; hostile values of the keys it may carry are refused
    metadata = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**metadata, "storage_dtype": 5, "whitened": 1, "notes": 5}))
    read = read_set(folder, SetSource(), list(CLASSES), RESOLUTION)
    assert not {"whitened", "storage_dtype", "notes"} & set(read.metadata)
    (folder / "metadata.json").write_text(json.dumps({**metadata, "zca": "yes"}))
    with pytest.raises(LatentDistillError) as error:
        read_set(folder, SetSource(), list(CLASSES), RESOLUTION)
    assert "metadata key 'zca'" in one_line(error)


def test_an_empty_class_reads_back(tiny, tmp_path):
    file, _, _ = tiny
    distilled = read_distilled(file)
    keep = distilled.labels != 2
    distilled.latents, distilled.labels, distilled.images = distilled.latents[keep], distilled.labels[keep], distilled.images[keep]
    folder = export_set(distilled, "imagefolder", tmp_path / "set", progress=False)
    assert (folder / CLASSES[2]).is_dir() and not list((folder / CLASSES[2]).iterdir())
    read = read_set(folder, SetSource(), list(CLASSES), RESOLUTION)
    assert torch.equal(read.labels, distilled.labels)


def test_export_refuses_class_names_that_leave_the_folder(tiny, tmp_path):
    file, _, _ = tiny
    distilled = read_distilled(file)
    for name in ("../escape", "/tmp/x", ".hidden", ""):
        distilled.metadata["classes"] = [name, "b", "c"]
        with pytest.raises(LatentDistillError) as error:
            export_set(distilled, "imagefolder", tmp_path / "out", progress=False)
        assert "cannot be a folder name" in one_line(error)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_whitened_set_exports_as_pixels(tiny, tmp_path):
    file, _, _ = tiny
    distilled = read_distilled(file)
    named = ["data.zca=true", "data.mean=cifar10", "data.std=cifar10"]
    config = load_config(None, [*tiny[1], *named])
    task = build_task(config)
    data = task.prepare(autoencoder_of(config), torch.device("cpu"), progress=False)
    write_pair(tmp_path / "mtt", task.normalize(data)(distilled.images.float() / 255), distilled.labels)
    with pytest.raises(LatentDistillError, match="pass --config"):
        workflows.run_export(tmp_path / "mtt" / "images_best.pt", "imagefolder", tmp_path / "x")
    workflows.run_export(tmp_path / "mtt" / "images_best.pt", "imagefolder", tmp_path / "out", config,
                         SetSource(normalization="cifar10", zca_eps=0.1), progress=False)
    back = read_set(tmp_path / "out", SetSource(), list(CLASSES), RESOLUTION)
    assert (back.images.int() - distilled.images.int()).abs().max() <= 1 and "whitened" not in back.metadata
    assert back.metadata["zca"]["eps"] == 0.1  # still a set made for whitened inputs
    with pytest.raises(LatentDistillError, match="positive eps"):
        read_set(tmp_path / "mtt" / "images_best.pt", SetSource(normalization="cifar10", zca_eps=0.0), list(CLASSES),
                 RESOLUTION)
