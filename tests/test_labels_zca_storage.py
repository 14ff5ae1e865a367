"""Field-level additions to trajectory matching: DATM's start window and learned soft labels, ZCA whitening,
soft-label evaluation, the learned learning rate at evaluation, and storage accounting; on tiny data through
the real code (buffer -> distill -> export -> evaluate)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from latentdistill import nets, workflows
from latentdistill.cli import main
from latentdistill.config import load_config
from latentdistill.data.zca import fit_zca, load_or_fit_zca
from latentdistill.distill.buffer import StartWindow
from latentdistill.distill.checkpoint import load_checkpoint
from latentdistill.distill.classifier_training import TrainingStream, sgd_epoch
from latentdistill.errors import LatentDistillError
from latentdistill.export import DistilledSet, read_distilled, write_distilled
from latentdistill.run_folder import RunFolder
from latentdistill.runtime import Normalize
from latentdistill.storage import latents_in_storage, storage_per_class, stored_tensors

from helpers import make_tiny_base, one_line, tiny_overrides

# --- ZCA -----------------------------------------------------------------------------------------


def test_zca_whitens_and_is_kept_and_reused(tmp_path):
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(48, 48, generator=generator)  # correlated pixels
    flat = (torch.randn(400, 48, generator=generator) @ mixing)
    images = ((flat - flat.min()) / (flat.max() - flat.min()) * 255).round().to(torch.uint8).view(400, 3, 4, 4)
    normalize = Normalize([0.5] * 3, [0.25] * 3)
    zca = fit_zca(images, normalize, eps=1e-6)
    torch.testing.assert_close(zca.matrix, zca.matrix.T)
    whitened = Normalize([0.5] * 3, [0.25] * 3, (zca.mean, zca.matrix))(images.float() / 255).flatten(1).double()
    covariance = torch.cov(whitened.T)
    torch.testing.assert_close(covariance, torch.eye(48, dtype=torch.float64), atol=5e-3, rtol=0)
    assert whitened.mean(0).abs().max() < 1e-4
    # kept beside the cache, reused while the key holds, refitted when it changes
    path = tmp_path / "zca.safetensors"
    first = load_or_fit_zca(path, images, normalize, 0.1, {"rows": 1})
    stamp = path.stat().st_mtime_ns
    again = load_or_fit_zca(path, images, normalize, 0.1, {"rows": 1})
    assert path.stat().st_mtime_ns == stamp and torch.equal(again.matrix, first.matrix)
    other = load_or_fit_zca(path, images[:200], normalize, 0.1, {"rows": 2})
    assert not torch.equal(other.matrix, first.matrix)
    path.write_bytes(path.read_bytes()[:100])  # a truncated cache file is fitted again, not an error
    assert torch.equal(load_or_fit_zca(path, images[:200], normalize, 0.1, {"rows": 2}).matrix, other.matrix)


# --- the start window ----------------------------------------------------------------------------


def test_start_window_grows_from_the_easy_trajectories():
    window = StartWindow(0, 2, 6)
    assert window.bounds(0, 100) == (0, 2)
    assert window.bounds(49, 100) == (0, 4)
    assert window.bounds(99, 100) == (0, 6)  # the last start epoch the buffer check allows is drawn
    assert StartWindow(0, 2, 6, growth_iterations=10).bounds(9, 100) == (0, 6)
    assert StartWindow(0, 2, 6, growth_iterations=10).bounds(4, 100) == (0, 4)
    assert StartWindow(1, 1).bounds(5, 10) == (1, 2)  # an empty window starts at its low end
    assert StartWindow(0, 2, 6).last_start == 5 and StartWindow(0, 0).last_start == 0


# --- soft-label training -------------------------------------------------------------------------


def test_one_hot_soft_labels_train_exactly_like_hard_labels():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(12) % 3
    normalize = Normalize([0.5] * 3, [0.25] * 3)
    trained = []
    for targets in (labels, F.one_hot(labels, 3).float()):
        torch.manual_seed(1)
        net = nets.build("convnet", num_classes=3, resolution=16, width=8)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            sgd_epoch(net, optimizer, [TrainingStream(images, targets, torch.Generator().manual_seed(2))], 4, normalize,
                      None, "fp32")
        trained.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(trained[0], trained[1], rtol=1e-5, atol=1e-6)


# --- storage accounting --------------------------------------------------------------------------


def test_storage_accounting_is_exact_for_a_hand_made_file(tmp_path):
    # 3 classes with 2, 1 and 3 latents: fp16 latents of 4 x 2 x 2, fp32 soft labels, fp32 embeddings of 5
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    tensors = {"latents": torch.randn(6, 4, 2, 2).half(), "labels": labels,
               "soft_labels": F.one_hot(labels, 3).float(), "embeddings": torch.randn(6, 5),
               "images": torch.zeros(6, 3, 16, 16, dtype=torch.uint8)}
    path = tmp_path / "hand.safetensors"
    save_file(tensors, path, metadata={"format_version": "1", "task": '"classification"', "classes": '["a", "b", "c"]'})
    storage = storage_per_class(path)
    per_image = 16 * 2 + 3 * 4 + 5 * 4  # latents + soft labels + embeddings = 64 bytes
    assert storage["per_class"] == {"a": 2 * per_image, "b": per_image, "c": 3 * per_image}
    assert storage["mean_bytes_per_class"] == pytest.approx(6 * per_image / 3)
    assert storage["parts"] == {"latents": 64.0, "labels": 16.0, "soft_labels": 24.0, "embeddings": 40.0}
    assert storage["image_bytes"] == 768 and storage["image_equivalent"] == pytest.approx(round(128 / 768, 4))
    assert storage["counted"] == ["latents", "soft_labels", "embeddings"]


def test_storage_matched_count():
    # taef2 at 32 px: 32 x 4 x 4 latents of 1 KiB in fp16; a uint8 CIFAR image is 3 KiB
    assert latents_in_storage(1, (3, 32, 32), (32, 4, 4)) == 3
    assert latents_in_storage(10, (3, 32, 32), (32, 4, 4)) == 30
    assert latents_in_storage(1, (3, 32, 32), (32, 4, 4), label_values=10) == 2  # soft labels take their bytes
    with pytest.raises(LatentDistillError) as error:
        latents_in_storage(1, (3, 8, 8), (4, 8, 8))
    assert "distill.storage_ipc" in one_line(error)


def test_soft_labels_that_are_not_probabilities_are_refused(tmp_path):
    metadata = {"format_version": 1, "task": "classification", "classes": ["a", "b"]}
    good = DistilledSet(torch.randn(2, 4, 2, 2), torch.tensor([0, 1]), metadata=metadata,
                        soft_labels=torch.tensor([[0.7, 0.3], [0.2, 0.8]]))
    write_distilled(tmp_path / "good.safetensors", good)
    torch.testing.assert_close(read_distilled(tmp_path / "good.safetensors").soft_labels, good.soft_labels)
    for soft in (torch.tensor([[1.5, -0.5], [0.2, 0.8]]), torch.tensor([[0.5, 0.1], [0.2, 0.8]]), torch.ones(2, 3) / 3):
        with pytest.raises(LatentDistillError) as error:
            write_distilled(tmp_path / "bad.safetensors", DistilledSet(good.latents, good.labels, metadata=metadata,
                                                                       soft_labels=soft))
        assert "soft_labels" in one_line(error)
    assert not (tmp_path / "bad.safetensors").exists()


# --- end to end: buffer -> distill with learned labels and ZCA -> evaluate -------------------------


def datm_overrides(base, run_dir, **distill):
    values = {"objective": "mtt", "ipc": 1, "iterations": 4, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1,
              "max_start_epoch_final": 2, "optimizer": "adam", "lr": 0.01, "learn_labels": "true", "label_lr": 0.5,
              **distill}
    return tiny_overrides(base, run_dir, **values) + [
        f"buffer.dir={base / 'buffer'}", "buffer.experts=2", "buffer.epochs=3", "buffer.batch_size=8", "data.zca=true",
        "evaluate.runs=2"]


@pytest.fixture(scope="module")
def datm_base(tmp_path_factory):
    base = make_tiny_base(tmp_path_factory.mktemp("datm"))
    config = base / "seed.yaml"
    config.write_text("seed: 0\n")
    assert main(["--no-progress", "buffer", "--config", str(config), *datm_overrides(base, base / "unused")]) == 0
    return base


def test_learned_labels_and_zca_resume_bit_for_bit_and_are_exported(datm_base, tmp_path):
    # the window's growth spans 4 iterations in both runs (by default it spans the run's own iterations)
    whole = workflows.run_distill(load_config(None, datm_overrides(datm_base, tmp_path / "whole", window_iterations=4)),
                                  progress=False)
    halves = datm_overrides(datm_base, tmp_path / "halves", window_iterations=4)
    workflows.run_distill(load_config(None, halves + ["distill.iterations=2"]), progress=False)
    (tmp_path / "resumed").mkdir()  # a finished run's checkpoint, copied into a new folder, continues it
    (tmp_path / "resumed" / RunFolder.CHECKPOINT).write_bytes((tmp_path / "halves" / RunFolder.CHECKPOINT).read_bytes())
    halves = datm_overrides(datm_base, tmp_path / "resumed", window_iterations=4)
    resumed = workflows.run_distill(load_config(None, halves), resume=True, progress=False)
    first, second = read_distilled(whole), read_distilled(resumed)
    assert torch.equal(first.latents, second.latents) and torch.equal(first.soft_labels, second.soft_labels)
    assert first.metadata["learned"] == second.metadata["learned"]
    # the export holds the softmax of the learned logits the checkpoint keeps, and they moved from their start
    checkpoint = load_checkpoint(tmp_path / "whole" / RunFolder.CHECKPOINT)
    torch.testing.assert_close(first.soft_labels, checkpoint.label_logits.softmax(1))
    halfway = load_checkpoint(tmp_path / "halves" / RunFolder.CHECKPOINT)
    assert first.soft_labels.shape == (3, 3) and not torch.equal(halfway.label_logits, checkpoint.label_logits)
    log = [json.loads(line) for line in (tmp_path / "whole" / "distill_log.jsonl").read_text().splitlines()]
    assert len(log) == 4
    # ZCA is recorded with its fingerprint, and resuming without learned labels is refused
    assert first.metadata["zca"]["eps"] == 0.1 and len(first.metadata["zca"]["fingerprint"]) == 16
    with pytest.raises(LatentDistillError) as error:
        (tmp_path / "changed").mkdir()
        (tmp_path / "changed" / RunFolder.CHECKPOINT).write_bytes((tmp_path / "halves" / RunFolder.CHECKPOINT).read_bytes())
        workflows.run_distill(load_config(None, datm_overrides(datm_base, tmp_path / "changed", learn_labels="false",
                                                               window_iterations=4)), resume=True, progress=False)
    assert "learn_labels" in one_line(error)


def test_soft_label_evaluation_with_the_files_zca_and_learned_lr(datm_base, tmp_path):
    output = workflows.run_distill(load_config(None, datm_overrides(datm_base, tmp_path / "run")), progress=False)
    # evaluated with a config that forgot ZCA and asks for the soft rows and the learned lr
    config = load_config(None, datm_overrides(datm_base, tmp_path / "run") + [
        "data.zca=false", "evaluate.labels=soft", "evaluate.lr=learned"])
    report = workflows.run_evaluate(output, config, RunFolder(tmp_path / "evaluation"), progress=False)
    row = report["networks"]["convnet"]
    assert {"distilled", "random_real", "distilled_soft", "random_real_soft"} <= set(row)
    protocol = report["protocol"]
    assert protocol["zca"]["eps"] == 0.1 and any("ZCA" in note for note in report["notes"])
    learned = read_distilled(output).metadata["learned"]["synthetic_lr"]
    assert protocol["lr"] == pytest.approx(learned) and protocol["lr_source"].startswith("learned")
    assert protocol["labels"] == "soft" and "experts" in protocol["teacher"]
    assert report["storage"]["counted"] == ["latents", "soft_labels"]
    # a file without soft labels cannot give soft rows; a learned lr needs a file that learned one
    hard = workflows.run_distill(load_config(None, tiny_overrides(datm_base, tmp_path / "gm", ipc=1, iterations=1)),
                                 progress=False)
    for setting, key in (("evaluate.labels=soft", "soft_labels"), ("evaluate.lr=learned", "learned")):
        with pytest.raises(LatentDistillError) as error:
            workflows.run_evaluate(hard, load_config(None, tiny_overrides(datm_base, tmp_path / "gm") + [setting]),
                                   RunFolder(tmp_path / f"bad-{key}"), progress=False)
        assert key in one_line(error)


def test_storage_matched_run_stores_fp16_latents_and_decodes_them(datm_base, tmp_path):
    # In pixel space a 16 px latent is 3 x 16 x 16 values: 1,536 bytes in fp16, two uint8 images' worth.
    overrides = tiny_overrides(datm_base, tmp_path / "storage", ipc=5, iterations=1) + [
        "autoencoder.kind=pixels", f"cache.dir={tmp_path / 'pixels-cache'}", "data.mean=cifar10", "data.std=cifar10",
        "distill.storage_ipc=2"]
    output = workflows.run_distill(load_config(None, overrides), progress=False)
    distilled = read_distilled(output)
    assert distilled.ipc == 1 and distilled.metadata["ipc"] == 1 and distilled.metadata["storage_ipc"] == 2
    assert stored_tensors(output)["latents"][0] == "float16"
    storage = storage_per_class(output)
    assert storage["mean_bytes_per_class"] == 1536 and storage["image_equivalent"] == 2.0
    # the images are those the stored (fp16) latents decode to: mean + std * z, clamped, in uint8
    config = load_config(None, overrides)
    mean = torch.tensor(config.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.data.std).view(1, 3, 1, 1)
    expected = ((distilled.latents * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    assert (expected.int() - distilled.images.int()).abs().max() <= 1
    with pytest.raises(LatentDistillError) as error:  # one image's bytes hold no pixel-space latent
        workflows.run_distill(load_config(None, overrides[:-1] + ["distill.storage_ipc=1",
                                                                  f"output_dir={tmp_path / 'none'}"]), progress=False)
    assert "distill.storage_ipc" in one_line(error)


def test_learned_labels_need_trajectory_matching(datm_base, tmp_path, capsys):
    code = main(["--no-progress", "distill", *["--config", str(datm_base / "seed.yaml")],
                 *datm_overrides(datm_base, tmp_path / "gm", objective="gm")])
    assert code == 2 and "distill.learn_labels" in capsys.readouterr().err
    config = load_config(None, datm_overrides(datm_base, tmp_path / "x", init="noise"))
    with pytest.raises(LatentDistillError) as error:
        workflows.run_distill(config, progress=False)
    assert "distill.init" in one_line(error)


def test_metadata_of_the_new_keys_is_checked(tmp_path):
    base = {"format_version": 1, "task": "classification", "classes": ["a", "b"]}
    latents, labels = torch.randn(2, 4, 2, 2), torch.tensor([0, 1])
    for key, value in (("zca", {"eps": 0}), ("zca", {"eps": "0.1", "fingerprint": "x"}), ("zca", [0.1]),
                       ("learned", {"synthetic_lr": -0.01}), ("storage_ipc", 0), ("storage_ipc", "1")):
        with pytest.raises(LatentDistillError) as error:
            write_distilled(tmp_path / "bad.safetensors", DistilledSet(latents, labels, metadata={**base, key: value}))
        assert key in one_line(error)
    assert not (tmp_path / "bad.safetensors").exists()
    write_distilled(tmp_path / "none.safetensors", DistilledSet(latents, labels, metadata={**base, "zca": None}))


@pytest.mark.parametrize("setting, key", [
    (["distill.min_start_epoch=1", "distill.max_start_epoch=1", "distill.max_start_epoch_final=0"], "min_start_epoch"),
    (["distill.max_start_epoch_final=1"], "max_start_epoch_final"),
    (["distill.max_start_epoch_final=0", "distill.window_iterations=5"], "window_iterations"),
])
def test_window_settings_that_mean_nothing_are_refused(datm_base, tmp_path, setting, key):
    config = load_config(None, datm_overrides(datm_base, tmp_path / "run") + setting)
    with pytest.raises(LatentDistillError) as error:
        workflows.run_distill(config, progress=False)
    assert f"distill.{key}" in one_line(error)
    assert not (tmp_path / "run" / "distilled.safetensors").exists()


def test_a_set_distilled_without_zca_is_evaluated_without_it(datm_base, tmp_path):
    output = workflows.run_distill(load_config(None, tiny_overrides(datm_base, tmp_path / "plain", ipc=1, iterations=1)),
                                   progress=False)
    assert read_distilled(output).metadata["zca"] is None
    config = load_config(None, tiny_overrides(datm_base, tmp_path / "plain") + ["data.zca=true"])
    report = workflows.run_evaluate(output, config, RunFolder(tmp_path / "evaluation"), progress=False)
    assert report["protocol"]["zca"] is None and any("without it" in note for note in report["notes"])


def test_snapshots_are_distilled_files_of_their_iteration(datm_base, tmp_path):
    overrides = datm_overrides(datm_base, tmp_path / "run", iterations=4, snapshot_every=2, window_iterations=4)
    output = workflows.run_distill(load_config(None, overrides), progress=False)
    snapshots = sorted((tmp_path / "run" / "snapshots").glob("*.safetensors"))
    assert [path.name for path in snapshots] == ["iteration-000002.safetensors"]  # the last one is the export itself
    assert (tmp_path / "run" / "snapshots" / "iteration-000002.png").is_file()  # its grid, for the report page
    assert (tmp_path / "run" / "grid_start.png").is_file() and (tmp_path / "run" / "report.html").is_file()
    halfway = read_distilled(snapshots[0])
    assert halfway.metadata["distill_iterations"] == 2 and halfway.soft_labels is not None
    # the snapshot is the set after 2 iterations: what a 2-iteration run of the same config exports
    two = workflows.run_distill(load_config(None, datm_overrides(datm_base, tmp_path / "two", iterations=2,
                                                                 window_iterations=4)), progress=False)
    assert torch.equal(read_distilled(two).latents, halfway.latents)
    assert not torch.equal(read_distilled(output).latents, halfway.latents)
