"""rank-nets: a distilled set as a proxy dataset for architecture search (Moser et al., CVPRW 2022).

The rank statistics against hand-computed values, the candidate spec (lists, grids, one-line refusals), the
comparison and its time accounting, and the whole verb on the tiny image folder through the real code (a
second call reuses the full-data networks from the baseline cache, at their recorded seconds)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network

import dataclasses
import json
import math

import pytest
import torch

from latentdistill import workflows
from latentdistill.config import EvaluateConfig, load_config
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.baselines import BaselineCache
from latentdistill.evaluate.rank_nets import Candidate, candidates, compare, markdown_table, rank_candidates
from latentdistill.evaluate.ranking import average_ranks, best, kendall_tau_b, spearman
from latentdistill.runtime import Normalize
from latentdistill.workflows.rank import RANK_NETS_FILE, run_rank_nets

from helpers import coloured_images, make_tiny_base, one_line, tiny_overrides

# --- statistics ------------------------------------------------------------------------------------------


def test_average_ranks_share_ties():
    assert average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert average_ranks([3.0, 1.0, 2.0]) == [3, 1, 2]
    assert average_ranks([5, 5, 5]) == [2, 2, 2]


def test_spearman_against_hand_computed_values():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # no ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 4 / 120
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties in b: ranks [1, 2, 3.5, 5, 3.5]; sum(da db) = 8, sum(da^2) = 10, sum(db^2) = 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    # ties on both sides: ranks [4, 1, 2.5, 2.5] and [1.5, 3, 4, 1.5] -> -2.25 / 4.5
    assert spearman([3, 1, 2, 2], [1, 2, 3, 1]) == pytest.approx(-0.5)
    assert spearman([1, 2, 3], [7, 7, 7]) is None  # one side constant: no ordering
    assert spearman([1.0], [2.0]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_kendall_tau_b_against_hand_computed_values():
    assert kendall_tau_b([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # 10 pairs, 2 discordant ((1,2) and (3,4)): (8 - 2) / 10
    assert kendall_tau_b([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.6)
    # one tie on each side: 4 concordant, 0 discordant, 6 pairs: 4 / sqrt(5 * 5)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # 1 concordant, 3 discordant, a tie on each side: (1 - 3) / sqrt(5 * 5)
    assert kendall_tau_b([3, 1, 2, 2], [1, 2, 3, 1]) == pytest.approx(-0.4)
    assert kendall_tau_b([1, 2, 3], [7, 7, 7]) is None
    assert kendall_tau_b([], []) is None


def test_best_lists_every_candidate_at_the_top():
    assert best(["a", "b", "c"], [1.0, 3.0, 2.0]) == ["b"]
    assert best(["a", "b", "c"], [3.0, 1.0, 3.0]) == ["a", "c"]


# --- the candidate spec ----------------------------------------------------------------------------------


def test_a_list_of_registry_names():
    found = candidates("convnet, alexnet,vgg11,resnet18")
    assert [c.name for c in found] == ["convnet", "alexnet", "vgg11", "resnet18"]
    assert all(c.net == c.name and c.kwargs == {} for c in found)


def test_a_grid_is_the_cartesian_product_in_the_order_written():
    found = candidates("convnet:width=32,64;depth=2,3;norm=instancenorm,batchnorm")
    assert len(found) == 8
    assert found[0] == Candidate("convnet-w32-d2-instancenorm", "convnet", {"width": 32, "depth": 2, "norm": "instance"})
    assert found[-1] == Candidate("convnet-w64-d3-batchnorm", "convnet", {"width": 64, "depth": 3, "norm": "batch"})
    assert len({c.name for c in found}) == 8
    assert len(candidates("convnet:width=32,64,128;depth=1,2,3;norm=instancenorm,batchnorm")) == 18
    assert [c.name for c in candidates("convnet:norm=none,batch;width=8")] == ["convnet-nonorm-w8", "convnet-batchnorm-w8"]
    assert [c.kwargs for c in candidates("resnet18:width=8,16")] == [{"width": 8}, {"width": 16}]
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[0].name = "other"
    assert len({found[0], found[0]}) == 1  # hashable despite its dict


@pytest.mark.parametrize("spec, expected", [
    ("convnet,lenet", "unknown network 'lenet' (known: alexnet, convnet"),
    ("lenet:width=32", "unknown network 'lenet'"),
    ("convnet,", "unknown network '(empty)'"),
    ("", "network spec is empty"),
    ("convnet:colour=red", "unknown key 'colour' for convnet (known: width, depth, norm)"),
    ("alexnet:norm=batchnorm", "unknown key 'norm' for alexnet (known: width, depth)"),
    ("convnet:width=abc", "width must be a positive whole number, not 'abc'"),
    ("convnet:depth=0", "depth must be a positive whole number, not '0'"),
    ("convnet:norm=layernorm", "unknown norm 'layernorm' (known: instancenorm"),
    ("convnet:width=32;width=64", "write each key once"),
    ("convnet:width", "write each key once"),
    ("convnet:", "no key=values after 'convnet:'"),
    ("convnet,alexnet:width=32", "a grid names one network before ':', not 'convnet,alexnet'"),
    ("convnet,convnet", "candidate 'convnet' appears twice"),
    ("convnet:width=32,32", "candidate 'convnet-w32' appears twice"),
    ("alexnet:depth=2,3", "alexnet-d2 cannot be built (network 'alexnet' has a fixed depth"),
])
def test_a_bad_spec_is_refused_in_one_line(spec, expected):
    with pytest.raises(LatentDistillError) as error:
        candidates(spec)
    assert expected in one_line(error)


# --- ranking on tensors ----------------------------------------------------------------------------------


def _row(name: str, distilled: float, random: float, full: float, seconds=(1.0, 1.0, 10.0), cached=0) -> dict:
    entry = lambda mean, s: {"mean": mean, "std": 0.0, "runs": [mean], "seconds": s}  # noqa: E731
    return {"name": name, "distilled": entry(distilled, seconds[0]), "random_real": entry(random, seconds[1]),
            "full": {**entry(full, seconds[2]), "cached_runs": cached}}


def test_compare_ranks_each_proxy_against_the_full_data():
    rows = [_row("a", 30, 20, 60), _row("b", 40, 25, 70, cached=1), _row("c", 35, 30, 65, seconds=(2.0, 1.0, 20.0))]
    result = compare(rows)
    assert result["full"] == {"best": ["b"], "seconds": 40.0, "cached_runs": 1}
    assert result["distilled"]["spearman"] == 1.0 and result["distilled"]["kendall_tau_b"] == 1.0
    assert result["distilled"]["same_best"] is True and result["distilled"]["best"] == ["b"]
    assert result["distilled"]["time_saved"] == 10.0  # 40 s of full-data training for 4 s of proxy training
    # random real orders a < b < c against full a < c < b: one discordant pair of three
    assert result["random_real"]["kendall_tau_b"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["random_real"]["spearman"] == pytest.approx(0.5)
    assert result["random_real"]["same_best"] is False and result["random_real"]["best"] == ["c"]
    assert result["random_real"]["seconds"] == 3.0 and result["random_real"]["time_saved"] == pytest.approx(13.33)
    # a proxy that ties the top: its pick is its first best, in candidate order
    assert compare([_row("a", 50, 1, 60), _row("b", 50, 2, 70)])["distilled"]["same_best"] is False


def test_rank_candidates_trains_every_source_and_caches_the_full_data(tmp_path):
    images, labels = coloured_images(8, seed=0)
    test_images, test_labels = coloured_images(4, seed=1)
    normalize = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    real = ClassifierTraining(images, labels, 3, normalize, None, 3, torch.device("cpu"))
    rows = torch.arange(len(labels))
    distilled = rows[::8][:3]  # one image per class
    config = EvaluateConfig(runs=2, epochs=2, batch_size=8, full_epochs=1, batched=False)
    found = candidates("convnet:width=4;depth=1,2")
    cache = BaselineCache(tmp_path / "baselines.json")

    def rank(**keywords):
        return rank_candidates(found, images[distilled], labels[distilled], real, rows, test_images, test_labels,
                               config, baselines=cache, protocol_key={"data": "colours"}, progress=False, **keywords)

    first = rank()
    assert [row["name"] for row in first["candidates"]] == ["convnet-w4-d1", "convnet-w4-d2"]
    assert first["ipc"] == 1 and first["full_epochs"] == 1 and first["labels"] == "hard"
    for row in first["candidates"]:
        for source in ("distilled", "random_real", "full"):
            assert len(row[source]["runs"]) == 2 and row[source]["seconds"] > 0
        assert row["full"]["cached_runs"] == 0
    assert set(first["distilled"]) == {"spearman", "kendall_tau_b", "same_best", "best", "seconds", "time_saved"}
    assert len(json.loads((tmp_path / "baselines.json").read_text())) == 4  # 2 candidates x 2 runs, full data only
    second = rank()
    assert [row["full"] for row in second["candidates"]] == [{**row["full"], "cached_runs": 2} for row in first["candidates"]]
    assert second["full"]["seconds"] == first["full"]["seconds"]  # the seconds recorded when they trained
    assert [row["distilled"]["runs"] for row in second["candidates"]] == [row["distilled"]["runs"] for row in first["candidates"]]
    other = rank(full_epochs=2)  # another protocol is another baseline
    assert all(row["full"]["cached_runs"] == 0 for row in other["candidates"])
    # soft labels train the distilled networks (one-hot rows: soft cross-entropy is the hard one)
    soft = rank(soft_labels=torch.nn.functional.one_hot(labels[distilled], 3).float())
    assert soft["labels"] == "soft"
    assert [row["distilled"]["runs"] for row in soft["candidates"]] == [row["distilled"]["runs"] for row in first["candidates"]]
    table = markdown_table(first)
    assert "convnet-w4-d2" in table and "Kendall tau-b" in table and "full data (1 ep)" in table
    with pytest.raises(LatentDistillError, match="at least two candidates"):
        rank_candidates(found[:1], images[distilled], labels[distilled], real, rows, test_images, test_labels, config)


# --- the verb, through the real code ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = make_tiny_base(tmp_path_factory.mktemp("rank_nets"))
    overrides = [*tiny_overrides(base, base / "run", ipc=2, iterations=2), "evaluate.batch_size=8"]
    output = workflows.run_distill(load_config(None, overrides), progress=False)
    return output, [o for o in overrides if not o.startswith("output_dir=")]


def test_run_rank_nets_writes_its_folder_and_reuses_the_full_data(tiny_run, capsys):
    file, overrides = tiny_run
    before = file.read_bytes()
    config = load_config(None, [*overrides, "evaluate.full_epochs=1"])
    spec = "convnet:width=8;depth=1,2"
    first = run_rank_nets(file, config, spec, progress=False)
    printed = capsys.readouterr().out
    assert "convnet-w8-d1" in printed and "Spearman" in printed
    folder = file.parent / "rank-nets-1"
    assert json.loads((folder / RANK_NETS_FILE).read_text()) == first
    page = (folder / "report.html").read_text()  # the ranking is on the run's page too
    assert "Architecture ranking" in page and "Spearman" in page and first["candidates"][0]["name"] in page
    assert (folder / "config.yaml").is_file()
    assert first["spec"] == spec and first["ipc"] == 2 and first["full_epochs"] == 1 and first["epochs"] == 2
    assert first["protocol"]["selection"].startswith("none")
    assert [row["full"]["cached_runs"] for row in first["candidates"]] == [0, 0]
    assert first["full"]["cached_runs"] == 0
    second = run_rank_nets(file, config, spec, full_epochs=1, progress=False)
    assert (file.parent / "rank-nets-2" / RANK_NETS_FILE).is_file()
    assert [row["full"]["cached_runs"] for row in second["candidates"]] == [1, 1]
    assert [row["full"]["mean"] for row in second["candidates"]] == [row["full"]["mean"] for row in first["candidates"]]
    assert second["full"]["seconds"] == first["full"]["seconds"]
    assert [row["distilled"]["mean"] for row in second["candidates"]] == [row["distilled"]["mean"] for row in first["candidates"]]
    assert file.read_bytes() == before  # the file is only read


def test_run_rank_nets_refuses_before_making_a_folder(tiny_run):
    file, overrides = tiny_run
    config = load_config(None, overrides)
    folders = sorted(file.parent.glob("rank-nets-*"))
    with pytest.raises(LatentDistillError) as error:
        run_rank_nets(file, config, "convnet,lenet", progress=False)
    assert "unknown network 'lenet'" in one_line(error)
    with pytest.raises(LatentDistillError) as error:
        run_rank_nets(file, load_config(None, [*overrides, "data.resolution=32"]), "convnet,alexnet", progress=False)
    assert "set data.resolution=16" in one_line(error)
    assert sorted(file.parent.glob("rank-nets-*")) == folders
