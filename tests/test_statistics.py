"""``data.mean``/``data.std``: ``auto`` (the training split's own statistics, kept beside its cache), a name, or
numbers; the statistics a run normalised with are recorded in its export."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json

import pytest
import torch

from latentdistill import workflows
from latentdistill.config import load_config
from latentdistill.data.latent_cache import LatentCache
from latentdistill.data.statistics import STATISTICS_FILE, channel_statistics
from latentdistill.errors import LatentDistillError
from latentdistill.export import read_distilled
from latentdistill.runtime import STATISTICS

from helpers import make_tiny_base, one_line, tiny_overrides


def test_channel_statistics_are_those_of_the_pixels():
    images = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_statistics(images, batch_size=3)
    pixels = images.double() / 255
    assert mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-6)


def test_auto_statistics_come_from_the_training_split_and_are_recorded(tmp_path):
    base = make_tiny_base(tmp_path)
    output = workflows.run_distill(load_config(None, tiny_overrides(base, tmp_path / "run", ipc=1, iterations=1)),
                                   progress=False)
    cache = LatentCache.load(base / "cache" / "train")
    saved = json.loads((cache.directory / STATISTICS_FILE).read_text())
    assert saved["fingerprint"] == cache.meta["fingerprint"] and saved["images"] == len(cache.images)
    recorded = read_distilled(output).metadata["normalization"]
    assert recorded == {"mean": saved["mean"], "std": saved["std"]}
    assert recorded["mean"] == pytest.approx(channel_statistics(cache.images)[0])
    assert recorded["mean"] != STATISTICS["cifar10"][0]  # the tiny set's own colours, not CIFAR-10's


def test_named_statistics_and_bad_values():
    config = load_config(None, ["data.mean=cifar10", "data.std=imagenet"])
    assert config.data.mean == STATISTICS["cifar10"][0] and config.data.std == STATISTICS["imagenet"][1]
    assert load_config(None, []).data.mean == "auto"
    for override, expected in (("data.mean=cifar11", "one of auto | cifar10"), ("data.std=[1, 0, 1]", "greater than 0"),
                               ("data.mean=[0.5, 0.5]", "list of 3 numbers")):
        with pytest.raises(LatentDistillError) as error:
            load_config(None, [override])
        assert expected in one_line(error)


def test_pixel_space_needs_statistics_before_the_cache(tmp_path):
    base = make_tiny_base(tmp_path)
    config = load_config(None, tiny_overrides(base, tmp_path / "run", ipc=1, iterations=1)
                         + ["autoencoder.kind=pixels", "autoencoder.name_or_path=unused"])
    with pytest.raises(LatentDistillError) as error:
        workflows.run_distill(config, progress=False)
    assert "data.mean=cifar10" in one_line(error) and not (tmp_path / "run" / "distilled.safetensors").exists()


def test_tensorboard_tracker_gets_the_loss(tmp_path):
    """``log_with: [tensorboard]``: accelerate's tracker writes an event file with the loss (read back as bytes:
    the tag is in it), beside distill_log.jsonl, which stays the record."""
    pytest.importorskip("tensorboardX")
    base = make_tiny_base(tmp_path)
    overrides = tiny_overrides(base, tmp_path / "run", ipc=1, iterations=2) + ["log_with=[tensorboard]"]
    workflows.run_distill(load_config(None, overrides), progress=False)
    events = list((tmp_path / "run" / "trackers").rglob("events.out.tfevents.*"))
    assert events and any(b"loss" in path.read_bytes() for path in events)
    assert len((tmp_path / "run" / "distill_log.jsonl").read_text().splitlines()) == 2


def test_unknown_tracker_is_refused_before_any_work(tmp_path):
    base = make_tiny_base(tmp_path)
    overrides = tiny_overrides(base, tmp_path / "run", ipc=1, iterations=2) + ["log_with=[tensorbored]"]
    with pytest.raises(LatentDistillError) as error:
        workflows.run_distill(load_config(None, overrides), progress=False)
    assert "unknown tracker 'tensorbored'" in one_line(error) and not (tmp_path / "run").exists()
