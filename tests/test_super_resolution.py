"""Super-resolution: metrics against hand-computed values, the standard bicubic figures, SR training,
and an SR distillation of a few steps through the CLI on tiny data."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from latentdistill.cli import main
from latentdistill.config import SR_PROTOCOLS, SuperResolutionConfig, load_config
from latentdistill.data.super_resolution import extract_patches, load_hr_images, make_lr, modcrop
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.sr_training import make_lr_patches, protocol_record, sr_protocol, train_sr
from latentdistill.evaluate.super_resolution import (
    evaluate_sr,
    load_sr_model,
    pruned_subset,
    psnr_y,
    rgb_to_y,
    save_sr_model,
    set_row,
    ssim_y,
)
from latentdistill.export import read_distilled
from latentdistill.io import read_safetensors
from latentdistill.tasks.super_resolution import SuperResolutionTask

from helpers import SHARED, one_line, save_tiny_autoencoder

SR_DATA = SHARED / "data" / "sr"


def gray(value: int, size=(3, 24, 24)) -> torch.Tensor:
    return torch.full(size, value, dtype=torch.uint8)


def texture(seed: int, size: int = 24) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, size // 4, size // 4, generator=generator), size=size, mode="bicubic")
    return (smooth[0].clamp(0, 1) * 255).round().to(torch.uint8)


def test_y_channel_is_bt601():
    assert float(rgb_to_y(gray(0, (3, 1, 1)))) == pytest.approx(16.0)
    assert float(rgb_to_y(gray(255, (3, 1, 1)))) == pytest.approx(235.0)
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
    assert float(rgb_to_y(red)) == pytest.approx(16 + 65.481)


def test_identical_images_give_infinite_psnr_and_ssim_one():
    image = texture(0)
    assert psnr_y(image, image, border=2) == math.inf
    assert ssim_y(image, image, border=2) == pytest.approx(1.0, abs=1e-12)


def test_a_known_shift_gives_a_known_psnr():
    # every channel +1 on gray: Y moves by 219/255 everywhere, so MSE = (219/255)^2
    expected = 10 * math.log10(255**2 / (219 / 255) ** 2)
    assert psnr_y(gray(101), gray(100), border=0) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(gray(110), gray(100), border=0) == pytest.approx(expected - 20, abs=1e-9)  # 10x the error


def test_border_crop_ignores_the_border():
    target = texture(1)
    output = target.clone()
    output[:, :2, :] = 0  # damage only the two top rows
    assert psnr_y(output, target, border=2) == math.inf
    assert psnr_y(output, target, border=1) < 40
    assert ssim_y(output, target, border=2) == pytest.approx(1.0, abs=1e-12)


def test_ssim_falls_with_structure_not_with_a_small_offset():
    target = texture(2, 48)
    noise = torch.randint(0, 256, target.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert ssim_y(noise, target, border=0) < 0.2
    assert 0.99 < ssim_y((target.int() + 2).clamp(0, 255).to(torch.uint8), target, border=0) < 1.0


def test_modcrop_lr_and_patches():
    image = texture(3, 50)
    assert modcrop(image, 4).shape == (3, 48, 48)
    lr = make_lr(modcrop(image, 4), 4)
    assert lr.shape == (3, 12, 12) and lr.dtype == torch.uint8
    with pytest.raises(LatentDistillError, match="multiple of scale"):
        make_lr(image, 4)
    patches = extract_patches([image, texture(4, 30)], size=16, stride=16)
    assert patches.shape == (3 * 3 + 1 * 1, 3, 16, 16)
    torch.testing.assert_close(patches[0], image[:, :16, :16])


def test_pruning_drops_the_hardest_then_keeps_the_next_hardest():
    losses = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4, 0.05] * 2)  # 20 patches
    kept = pruned_subset(losses, count=4, drop=0.1)  # drop the 2 hardest (0.9, 0.9), keep the next 4
    assert sorted(losses[kept].tolist()) == pytest.approx([0.7, 0.7, 0.8, 0.8])


def test_sr_training_beats_bicubic_on_what_it_learned(tmp_path):
    images = [texture(seed, 48) for seed in range(6)]
    hr = extract_patches(images, 24, 12)
    config = SuperResolutionConfig(scale=2, net="espcn", iterations=300, batch_size=16, lr=3e-3)
    model = train_sr(make_lr_patches(hr, 2), hr, config, seed=0, device=torch.device("cpu"))
    trained = evaluate_sr(model, images, 2)
    assert trained["psnr"] > evaluate_sr("bicubic", images, 2)["psnr"]
    save_sr_model(tmp_path / "model.safetensors", model, "espcn", 2)
    loaded, scale = load_sr_model(tmp_path / "model.safetensors")
    assert scale == 2 and evaluate_sr(loaded, images, 2)["psnr"] == pytest.approx(trained["psnr"])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LatentDistillError) as error:
        load_sr_model(tmp_path / "junk.safetensors")
    assert "junk.safetensors" in one_line(error)


@pytest.mark.skipif(not SR_DATA.is_dir(), reason="../shared/data/sr not present")
@pytest.mark.parametrize(("folder", "published"), [("set5", 33.66), ("bsd100", 29.56)])
def test_bicubic_matches_the_published_x2_figures(folder, published):
    result = evaluate_sr("bicubic", load_hr_images(SR_DATA / folder), 2)
    assert abs(result["psnr"] - published) <= 0.05


def make_sr_folders(root):
    for split, count, size in (("train", 6, 64), ("test", 2, 40)):
        (root / split).mkdir(parents=True)
        for index in range(count):
            array = texture(100 * (split == "test") + index, size).permute(1, 2, 0).numpy()
            Image.fromarray(np.ascontiguousarray(array)).save(root / split / f"{index:02d}.png")
    return root


def tiny_sr_config(tmp_path, output: str, distill: dict, sr: dict, **sections) -> tuple:
    """Tiny SR folders, a tiny autoencoder and a config (JSON is YAML) naming them: (config path, data root)."""
    root = make_sr_folders(tmp_path / "sr")
    save_tiny_autoencoder(tmp_path / "autoencoder")
    config = tmp_path / "sr.yaml"
    config.write_text(json.dumps({
        "task": "sr", "output_dir": str(tmp_path / output), "device": "cpu",
        "autoencoder": {"name_or_path": str(tmp_path / "autoencoder")}, "cache": {"dir": str(tmp_path / "cache")},
        "distill": distill, **sections,
        "sr": {"train": [str(root / "train")], "test": [str(root / "test")], "scale": 2, "patch_size": 16, "stride": 16, **sr},
    }))
    return config, root


def test_sr_distillation_evaluation_and_the_sr_verbs(tmp_path, capsys):
    config, root = tiny_sr_config(
        tmp_path, "run", {"objective": "dm", "iterations": 3, "real_batch": 4, "lr": 0.01, "optimizer": "adam", "checkpoint_every": 2},
        {"budget": 0.25, "pseudo_classes": 2, "synthetic_batch": 2, "net": "espcn", "iterations": 5, "batch_size": 4, "runs": 2})
    assert main(["--no-progress", "run", "--config", str(config)]) == 0
    distilled = read_distilled(tmp_path / "run" / "distilled.safetensors")
    assert distilled.metadata["task"] == "sr" and distilled.metadata["real_patches"] == 6 * 16
    assert distilled.images.shape == (24, 3, 16, 16)  # 25% of 96 patches
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["results"]) == {"distilled", "full", "random", "pruned", "bicubic"}
    assert report["patches"]["random"] == report["patches"]["pruned"] == 24
    assert len(report["results"]["distilled"]["test"]["psnr"]["runs"]) == 2
    printed = capsys.readouterr().out
    assert "| distilled (3 matching steps) | 24 |" in printed
    # the protocol is named in the report and the table: the config's own numbers make it a modified quick one
    assert report["protocol"]["name"] == "quick, modified (iterations=5, batch_size=4)"
    assert "(quick, modified (iterations=5, batch_size=4) protocol)" in printed

    # gm as well, and the SR verbs on the result
    code = main(["--no-progress", "distill", "--config", str(config), "distill.objective=gm", f"output_dir={tmp_path / 'gm'}"])
    assert code == 0
    assert main(["--no-progress", "sr-train", "--config", str(config), "--from", str(tmp_path / "gm" / "distilled.safetensors"),
                 f"output_dir={tmp_path / 'model'}"]) == 0
    trained = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert trained and all(line["protocol"] == "quick, modified (iterations=5, batch_size=4)" for line in trained)
    assert json.loads(read_safetensors(tmp_path / "model" / "sr_model.safetensors")[1]["protocol"])["iterations"] == 5
    assert not (tmp_path / "model" / "sr_model_checkpoint.safetensors").exists()  # a finished training leaves none
    # sr-train continues a checkpoint in output_dir, and refuses one of another training, naming it
    from latentdistill.evaluate.sr_training import SRTraining

    patches = read_distilled(tmp_path / "gm" / "distilled.safetensors").images
    (tmp_path / "model2").mkdir()
    SRTraining(make_lr_patches(patches, 2), patches, load_config(config, []).sr, 0, torch.device("cpu")).save(
        tmp_path / "model2" / "sr_model_checkpoint.safetensors", "another training")
    assert main(["--no-progress", "sr-train", "--config", str(config), "--from", str(tmp_path / "gm" / "distilled.safetensors"),
                 f"output_dir={tmp_path / 'model2'}"]) == 2
    assert "model2/sr_model_checkpoint.safetensors belongs to another training" in capsys.readouterr().err
    assert main(["sr-eval", "--model", str(tmp_path / "model" / "sr_model.safetensors"), "--scale", "2", str(root / "test")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) >= {"psnr", "ssim"} and math.isfinite(line["psnr"]) and 0 < line["ssim"] <= 1
    assert main(["sr-eval", "--model", str(tmp_path / "model" / "sr_model.safetensors"), "--scale", "4", str(root / "test")]) == 2
    assert "x2" in capsys.readouterr().err

    # a later evaluation reuses the baselines; a pool of the budget's size starts from the pruned subset
    assert main(["--no-progress", "evaluate", str(tmp_path / "gm" / "distilled.safetensors"), "--config", str(config),
                 f"output_dir={tmp_path / 'gm_evaluation'}"]) == 0
    assert set(json.loads((tmp_path / "gm_evaluation" / "report.json").read_text())["reused_baselines"]) == {"full", "random", "pruned"}
    # compare puts SR runs side by side, each with its protocol's name
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "run"), str(tmp_path / "gm_evaluation")]) == 0
    table = capsys.readouterr().out
    assert "quick, modified (iterations=5, batch_size=4)" in table and "| test set |" in table and "distilled (3 matching steps)" in table
    assert main(["--no-progress", "distill", "--config", str(config), "sr.pool=0.25", "distill.iterations=0",
                 f"output_dir={tmp_path / 'pool'}"]) == 0
    pooled = read_distilled(tmp_path / "pool" / "distilled.safetensors")
    assert pooled.metadata["pool_patches"] == 24 and pooled.metadata["real_patches"] == 96
    run_config = load_config(config, [])
    patches = extract_patches(load_hr_images(run_config.sr.train), 16, 16)
    rows = pruned_subset(SuperResolutionTask(run_config).patch_difficulty(patches, torch.device("cpu")), 24, run_config.sr.prune_drop)
    (cache,) = (tmp_path / "cache").glob("sr-*-16px-s16-autoencoder.safetensors")
    expected = read_safetensors(cache)[0]["latents"][rows]
    assert torch.equal(torch.sort(pooled.latents.flatten(1), dim=0).values, torch.sort(expected.flatten(1).float(), dim=0).values)
    capsys.readouterr()
    # an x2 set evaluated for x4 is refused before any training
    assert main(["--no-progress", "evaluate", str(tmp_path / "gm" / "distilled.safetensors"), "--config", str(config),
                 "sr.scale=4", f"output_dir={tmp_path / 'x4'}"]) == 2
    assert "'sr.scale'" in capsys.readouterr().err and not (tmp_path / "x4").exists()
    assert main(["--no-progress", "distill", "--config", str(config), "sr.pool=0.1", f"output_dir={tmp_path / 'bad'}"]) == 2
    assert "'sr.pool'" in capsys.readouterr().err


def test_sr_protocols_are_named_and_a_changed_one_says_so():
    quick = sr_protocol(SuperResolutionConfig())
    assert quick is SR_PROTOCOLS["quick"] and (quick.iterations, quick.batch_size, quick.lr) == (3000, 32, 1e-3)
    converged = sr_protocol(SuperResolutionConfig(protocol="converged"))
    assert converged.name == "converged" and converged.iterations > 10 * quick.iterations
    same = sr_protocol(SuperResolutionConfig(iterations=3000))  # the protocol's own number changes nothing
    assert same is quick
    changed = sr_protocol(SuperResolutionConfig(protocol="converged", lr=5e-4))
    assert changed.name == "converged, modified (lr=0.0005)" and changed.iterations == converged.iterations
    assert protocol_record(changed)["name"] == changed.name
    with pytest.raises(LatentDistillError) as error:
        load_config(None, ["sr.protocol=slow"])
    assert "'sr.protocol'" in one_line(error) and "converged" in one_line(error)
    with pytest.raises(LatentDistillError) as error:
        load_config(None, ["sr.iterations=many"])
    assert "'sr.iterations'" in one_line(error)


def test_protocols_with_the_same_lr_and_batch_share_one_expert_buffer(tmp_path):
    """Experts depend on the protocol's lr and batch only: espcn-converged (12k batches of 32) reuses quick's,
    converged (batches of 64) gets its own folder."""
    folders = make_sr_folders(tmp_path / "sr")

    def directory(*overrides):
        config = load_config(None, ["task=sr", f"sr.train=[{folders / 'train'}]", *overrides])
        return SuperResolutionTask(config).buffer_directory()

    quick = directory()
    assert directory("sr.protocol=espcn-converged") == quick and directory("sr.iterations=12000") == quick
    assert directory("sr.protocol=converged").name == quick.name + "-lr0.001-b64"
    assert directory("sr.lr=0.0005") != quick
    assert SR_PROTOCOLS["espcn-converged"].iterations == 12_000 and "ESPCN" in SR_PROTOCOLS["espcn-converged"].note


def test_a_set_is_called_distilled_only_when_it_took_matching_steps():
    assert set_row({"distill_iterations": 40}) == ("distilled", "distilled (40 matching steps)")
    assert set_row({"distill_iterations": 0, "pool": 0.1}) == ("pool", "pruned pool through the autoencoder (zero matching steps)")
    assert set_row({"distill_iterations": 0, "pool": 1.0})[1] == "random patches through the autoencoder (zero matching steps)"
    assert set_row({})[0] == "set"


def test_sr_experts_and_gradient_matching_on_trained_networks(tmp_path, capsys):
    root = make_sr_folders(tmp_path / "sr")
    save_tiny_autoencoder(tmp_path / "autoencoder")
    config = tmp_path / "sr.yaml"
    config.write_text(json.dumps({
        "task": "sr", "output_dir": str(tmp_path / "run"), "device": "cpu",
        "autoencoder": {"name_or_path": str(tmp_path / "autoencoder")}, "cache": {"dir": str(tmp_path / "cache")},
        "buffer": {"dir": str(tmp_path / "buffer"), "experts": 1, "epochs": 2},
        "distill": {"objective": "gm", "matching_nets": "experts", "min_start_epoch": 1, "max_start_epoch": 3,
                    "outer_loop": 1, "iterations": 2, "real_batch": 4, "lr": 0.01, "optimizer": "adam"},
        "sr": {"train": [str(root / "train")], "test": [str(root / "test")], "scale": 2, "patch_size": 16, "stride": 16,
               "budget": 0.25, "pseudo_classes": 2, "synthetic_batch": 2, "net": "espcn", "iterations": 5,
               "batch_size": 4, "runs": 1},
    }))
    # no buffer yet: one line saying how to make it, before any distillation
    assert main(["--no-progress", "distill", "--config", str(config)]) == 2
    assert "latentdistill buffer" in capsys.readouterr().err
    assert main(["--no-progress", "buffer", "--config", str(config)]) == 0
    assert "distill.matching_nets=experts" in capsys.readouterr().out
    first = tmp_path / "buffer" / "expert-000.safetensors"
    trajectory = read_safetensors(first)[0]["trajectory"]
    assert trajectory.shape[0] == 3 and not torch.equal(trajectory[0], trajectory[2])  # init + 2 epochs, trained
    meta = json.loads((tmp_path / "buffer" / "meta.json").read_text())
    assert meta["task"] == "sr" and meta["optimizer"] == "adam" and meta["batch_size"] == 4
    # more experts later: the finished one is kept as it is
    stamp = first.stat().st_mtime_ns
    assert main(["--no-progress", "buffer", "--config", str(config), "buffer.experts=2"]) == 0
    assert first.stat().st_mtime_ns == stamp and (tmp_path / "buffer" / "expert-001.safetensors").is_file()
    # gradient matching on the experts' networks moves the latents
    assert main(["--no-progress", "distill", "--config", str(config)]) == 0
    distilled = read_distilled(tmp_path / "run" / "distilled.safetensors")
    # the run's start: the same seed with zero steps
    assert main(["--no-progress", "distill", "--config", str(config), "distill.iterations=0", f"output_dir={tmp_path / 'start'}"]) == 0
    start = read_distilled(tmp_path / "start" / "distilled.safetensors")
    assert distilled.metadata["distill_iterations"] == 2 and start.metadata["distill_iterations"] == 0
    assert not torch.equal(distilled.latents, start.latents)
    # performance matching from the same experts: the student's real loss after its steps, and its learned lr
    assert main(["--no-progress", "distill", "--config", str(config), "distill.objective=pm", "distill.syn_steps=2",
                 "distill.syn_batch=4", "distill.syn_lr=0.05", f"output_dir={tmp_path / 'pm'}"]) == 0
    performance = read_distilled(tmp_path / "pm" / "distilled.safetensors")
    assert not torch.equal(performance.latents, start.latents) and performance.metadata["learned"]["synthetic_lr"] != 0.05
    capsys.readouterr()
    # a buffer of other networks, a window past its epochs, and mtt are refused in one line each
    for override, expected in (("sr.net=fsrcnn", "net"), ("distill.max_start_epoch=5", "'distill.max_start_epoch'"),
                               ("distill.objective=mtt", "matching_nets=experts")):
        assert main(["--no-progress", "distill", "--config", str(config), override, f"output_dir={tmp_path / 'bad'}"]) == 2
        assert expected in capsys.readouterr().err


def test_an_interrupted_sr_expert_resumes_to_the_same_trajectory(tmp_path, monkeypatch):
    import latentdistill.distill.buffer as buffer_module
    from latentdistill.tasks.sr_matching import Reconstruction, train_sr_experts

    patches = extract_patches([texture(seed, 32) for seed in range(4)], 16, 8)
    meta = {"task": "sr", "net": "espcn", "scale": 2, "patches": "tiny", "experts": 1, "epochs": 3, "optimizer": "adam",
            "lr": 1e-3, "batch_size": 8, "augment": "dihedral", "seed": 0}

    def train(directory):
        return train_sr_experts(patches, directory, meta, Reconstruction(2), True, torch.device("cpu"), progress=False)

    reference = train(tmp_path / "reference").trajectory(0)
    real_save = buffer_module.atomic_save_file

    def save_then_stop(*args, **kwargs):  # the process dies right after the first epoch's checkpoint
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(buffer_module, "atomic_save_file", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed")
    assert (tmp_path / "resumed" / "expert-000.partial.safetensors").exists()
    monkeypatch.setattr(buffer_module, "atomic_save_file", real_save)
    assert torch.equal(train(tmp_path / "resumed").trajectory(0), reference)  # Adam's moments came back too
    assert not (tmp_path / "resumed" / "expert-000.partial.safetensors").exists()


def interrupt_after(monkeypatch, module, name: str, calls: int) -> None:
    """The process dies right after the ``calls``-th write by ``module.name`` (a file helper): a real write, then
    Ctrl-C."""
    real = getattr(module, name)
    done = []

    def write_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        done.append(1)
        if len(done) == calls:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, name, write_then_stop)


def test_an_interrupted_sr_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import latentdistill.evaluate.sr_training as sr_module
    from latentdistill.evaluate.sr_training import TrainingCheckpoint

    hr = extract_patches([texture(seed, 32) for seed in range(3)], 16, 8)
    lr = make_lr_patches(hr, 2)
    config = SuperResolutionConfig(scale=2, net="fsrcnn", iterations=20, batch_size=4, lr=3e-3)  # lr halves at 10 and 15
    reference = train_sr(lr, hr, config, seed=3, device=torch.device("cpu")).state_dict()
    checkpoint = TrainingCheckpoint(tmp_path / "training.safetensors", "fsrcnn on the textures", every_seconds=0)
    interrupt_after(monkeypatch, sr_module, "atomic_save_file", 7)  # a checkpoint after every iteration: stop at 7
    with pytest.raises(KeyboardInterrupt):
        train_sr(lr, hr, config, seed=3, device=torch.device("cpu"), checkpoint=checkpoint)
    assert read_safetensors(checkpoint.path)[1]["iteration"] == "7"
    monkeypatch.undo()
    kept = checkpoint.path.read_bytes()
    resumed = train_sr(lr, hr, config, seed=3, device=torch.device("cpu"), checkpoint=checkpoint).state_dict()
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)  # Adam, the lr and the batches came back
    # the finished state stays until the caller has kept the result: a rerun only loads it
    assert read_safetensors(checkpoint.path)[1]["iteration"] == "20"
    again = train_sr(lr, hr, config, seed=3, device=torch.device("cpu"), checkpoint=checkpoint).state_dict()
    assert all(torch.equal(again[name], reference[name]) for name in reference)
    # the training continues from the file's weights, not from scratch: nudged weights end elsewhere
    checkpoint.path.write_bytes(kept)
    tensors, metadata = read_safetensors(checkpoint.path)
    tensors["model.upsample.bias"] = tensors["model.upsample.bias"] + 0.01
    save_file(tensors, checkpoint.path, metadata=metadata)
    nudged = train_sr(lr, hr, config, seed=3, device=torch.device("cpu"), checkpoint=checkpoint).state_dict()
    assert not torch.equal(nudged["upsample.bias"], reference["upsample.bias"])

    # a checkpoint of another training, a damaged one, or one of another network: one line naming the file
    checkpoint.path.write_bytes(kept)
    for wrong, expected in ((dataclasses.replace(checkpoint, key="another set"), "belongs to another training"),
                            (checkpoint, "does not fit")):
        with pytest.raises(LatentDistillError) as error:
            espcn = dataclasses.replace(config, net="espcn") if wrong is checkpoint else config
            train_sr(lr, hr, espcn, seed=3, device=torch.device("cpu"), checkpoint=wrong)
        assert "training.safetensors" in one_line(error) and expected in str(error.value)
    checkpoint.path.write_bytes(kept[: len(kept) // 2])
    with pytest.raises(LatentDistillError) as error:
        train_sr(lr, hr, config, seed=3, device=torch.device("cpu"), checkpoint=checkpoint)
    assert "training.safetensors" in one_line(error) and "unreadable" in str(error.value)


def test_sr_run_records_keep_finished_runs_and_refuse_another_rows(tmp_path):
    from latentdistill.evaluate.sr_training import RunRecords, train_and_score

    hr = extract_patches([texture(seed, 32) for seed in range(3)], 16, 8)
    tests = {"test": [texture(50, 32)]}
    config = SuperResolutionConfig(scale=2, net="espcn", iterations=6, batch_size=4, runs=2)
    records = RunRecords(tmp_path / "progress", "espcn on the textures")
    measured = train_and_score(hr, tests, config, 0, torch.device("cpu"), records=records)
    # the runs' checkpoints are gone once their scores are kept
    assert sorted(records.finished(["test"])) == [0, 1] and list((tmp_path / "progress").iterdir()) == [records.path]
    # a record whose run 0 says 99 dB and which lacks run 1: run 0 is read, run 1 trained again to the same value
    record = json.loads(records.path.read_text())
    record["runs"]["0"]["test"]["psnr"] = 99.0
    del record["runs"]["1"]
    records.path.write_text(json.dumps(record))
    again = train_and_score(hr, tests, config, 0, torch.device("cpu"), records=records)
    assert again["test"]["psnr"] == [99.0, measured["test"]["psnr"][1]]
    # another row's record, or a damaged one (not JSON, a run that is not a number, a missing metric or test, a
    # score that is not a number): one line naming the file, before any training
    scores = record["runs"]["0"]
    for damaged in ({**record, "key": "another row"}, "{broken", {**record, "runs": {"first": scores}},
                    {**record, "runs": {"0": {"test": {"psnr": 30.0}}}}, {**record, "runs": {"0": {}}},
                    {**record, "runs": {"0": {"test": {"psnr": "30", "ssim": 0.9}}}}, {**record, "runs": [scores]}):
        records.path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
        with pytest.raises(LatentDistillError) as error:
            train_and_score(hr, tests, config, 0, torch.device("cpu"), records=records)
        assert records.path.name in one_line(error)


def test_an_interrupted_sr_evaluation_continues_in_its_folder(tmp_path, capsys, monkeypatch):
    import latentdistill.evaluate.sr_training as sr_module

    config, _ = tiny_sr_config(
        tmp_path, "pool", {"iterations": 0},
        {"budget": 0.25, "pool": 0.25, "pseudo_classes": 2, "net": "espcn", "iterations": 5, "batch_size": 4, "runs": 2,
         "baselines": ["random"]}, evaluate={"reuse_baselines": False})
    assert main(["--no-progress", "distill", "--config", str(config)]) == 0
    pool = str(tmp_path / "pool" / "distilled.safetensors")
    evaluate = ["--no-progress", "evaluate", pool, "--config", str(config)]
    assert main([*evaluate, f"output_dir={tmp_path / 'reference'}"]) == 0
    reference = json.loads((tmp_path / "reference" / "report.json").read_text())["results"]
    capsys.readouterr()
    interrupt_after(monkeypatch, sr_module, "atomic_write_text", 3)  # the set's two runs and random's first are kept
    assert main(evaluate) == 130  # no output_dir: a fresh evaluation-N folder, kept because it holds progress
    err = capsys.readouterr().err
    folder = tmp_path / "pool" / "evaluation-1"
    assert f"output_dir={folder}" in err and not (folder / "report.json").exists()
    records = {len(json.loads(p.read_text())["runs"]): p for p in (folder / "progress").glob("runs-*.json")}
    assert sorted(records) == [1, 2]  # the set's two runs, random's first
    # the rerun reads the kept runs rather than training them again: a kept score marked 99 dB stays in the report
    marked = json.loads(records[2].read_text())
    marked["runs"]["0"]["test"]["psnr"] = 99.0
    records[2].write_text(json.dumps(marked))
    monkeypatch.undo()
    assert main([*evaluate, f"output_dir={folder}"]) == 0
    results = json.loads((folder / "report.json").read_text())["results"]
    assert results["pool"]["test"]["psnr"]["runs"] == [99.0, reference["pool"]["test"]["psnr"]["runs"][1]]
    assert results["random"] == reference["random"]  # its second run trained now: the same numbers as in one go
