"""Proxy datasets for architecture search (``rank-nets``), after Moser et al., "Less is More: Proxy Datasets in
NAS approaches" (CVPRW 2022): a distilled set is a good proxy if training candidate architectures on it ranks
them as training on the full data does, in a fraction of the time.

Each candidate trains ``runs`` networks on (a) the distilled set, (b) a random real subset of the same images
per class and (c) the full training rows (validation left out), with the standard protocol of
``train_classifiers`` (fixed epochs, last state tested once on the real test split: nothing is selected on the
test set, which only gives the reported accuracies). The rankings by mean test accuracy of (a) and (b) are then
compared with (c): Spearman's rho, Kendall's tau-b, whether the proxy picks a best candidate of the full data,
and the training time saved.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.config import EvaluateConfig
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.baselines import BaselineCache
from latentdistill.evaluate.classification import accuracy, random_real_subset, summarize, train_classifiers
from latentdistill.evaluate.ranking import best, kendall_tau_b, spearman
from latentdistill.runtime import use_batched

# Grid keys: what every classifier builder may take (nets/__init__.py), and how a candidate's name shows them.
GRID_KEYS = ("width", "depth", "norm")
NORMS = {"instancenorm": "instance", "instance": "instance", "batchnorm": "batch", "batch": "batch",
         "none": "none", "nonorm": "none"}
NORM_LABELS = {"instance": "instancenorm", "batch": "batchnorm", "none": "nonorm"}
SOURCES = ("distilled", "random_real", "full")
PROXIES = ("distilled", "random_real")


@dataclass(frozen=True)
class Candidate:
    """One architecture to rank: a registry name and the keywords its builder gets."""

    name: str  # for display: ``convnet-w64-d3-instancenorm``
    net: str
    kwargs: dict = field(default_factory=dict, hash=False)


def candidates(spec: str, resolution: int = 32) -> list[Candidate]:
    """``convnet,alexnet,vgg11,resnet18`` (registry names), or one grid ``convnet:width=32,64;depth=2,3;
    norm=instancenorm,batchnorm`` (the cartesian product, in the order written). Every grid candidate is built
    once at ``resolution`` so a value the network refuses is refused here, in one line."""
    spec = spec.strip()
    if not spec:
        raise LatentDistillError("network spec is empty: name networks (convnet,alexnet) or a grid (convnet:width=32,64)")
    if ":" in spec:
        return _grid(spec, resolution)
    names = [name.strip() for name in spec.split(",")]
    for name in names:
        _check_name(name, spec)
    _check_unique([Candidate(name, name) for name in names], spec)
    return [Candidate(name, name) for name in names]


def _check_name(name: str, spec: str) -> None:
    known = nets.names("classification")
    if name not in known:
        raise LatentDistillError(f"network spec '{spec}': unknown network '{name or '(empty)'}' (known: {', '.join(known)})")


def _check_unique(found: list[Candidate], spec: str) -> None:
    names = [candidate.name for candidate in found]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice:
        raise LatentDistillError(f"network spec '{spec}': candidate '{twice}' appears twice")


def _grid(spec: str, resolution: int) -> list[Candidate]:
    net, _, body = spec.partition(":")
    net = net.strip()
    if "," in net:
        raise LatentDistillError(f"network spec '{spec}': a grid names one network before ':', not '{net}'")
    _check_name(net, spec)
    accepted = _accepted_keys(net)
    axes: dict[str, list] = {}
    for part in filter(None, (part.strip() for part in body.split(";"))):
        key, equals, values = (text.strip() for text in part.partition("="))
        if key not in accepted:
            raise LatentDistillError(f"network spec '{spec}': unknown key '{key}' for {net} (known: {', '.join(accepted)})")
        if not equals or key in axes:
            raise LatentDistillError(f"network spec '{spec}': write each key once as key=value,value ('{part}')")
        axes[key] = [_value(key, value.strip(), spec) for value in values.split(",")]
    if not axes:
        raise LatentDistillError(f"network spec '{spec}': no key=values after '{net}:' (keys: {', '.join(accepted)})")
    found = [Candidate(_display(net, combination), net, combination)
             for combination in (dict(zip(axes, values)) for values in itertools.product(*axes.values()))]
    _check_unique(found, spec)
    for candidate in found:
        try:
            nets.build(candidate.net, num_classes=2, resolution=resolution, **candidate.kwargs)
        except (LatentDistillError, ValueError, TypeError, RuntimeError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise LatentDistillError(f"network spec '{spec}': {candidate.name} cannot be built ({reason})") from None
    return found


def _accepted_keys(net: str) -> list[str]:
    """The grid keys ``net``'s builder takes (all of them for a builder that passes on ``**kwargs``)."""
    parameters = inspect.signature(nets.NETWORKS.get(net)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return list(GRID_KEYS)
    return [key for key in GRID_KEYS if key in parameters]


def _value(key: str, text: str, spec: str):
    if key == "norm":
        if text not in NORMS:
            raise LatentDistillError(f"network spec '{spec}': unknown norm '{text}' (known: {', '.join(NORMS)})")
        return NORMS[text]
    if not text.isdigit() or int(text) < 1:
        raise LatentDistillError(f"network spec '{spec}': {key} must be a positive whole number, not '{text}'")
    return int(text)


def _display(net: str, kwargs: dict) -> str:
    parts = [NORM_LABELS[v] if k == "norm" else f"{k[0]}{v}" for k, v in kwargs.items()]
    return "-".join([net, *parts])


@dataclass
class _Sources:
    """The images and labels each source trains on, for a run seed (the full rows gathered once)."""

    real: ClassifierTraining  # every train image and label, and the protocol
    train_rows: torch.Tensor
    distilled: tuple[torch.Tensor, torch.Tensor]
    real_ipc: int
    _full: tuple[torch.Tensor, torch.Tensor] | None = None

    def images(self, source: str, run_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if source == "distilled":
            return self.distilled
        if source == "random_real":
            chosen = random_real_subset(self.real.labels, self.train_rows, self.real_ipc, seed=run_seed)
            return self.real.images[chosen], self.real.labels[chosen]
        if self._full is None:
            self._full = self.real.images[self.train_rows], self.real.labels[self.train_rows]
        return self._full


def full_data_key(candidate: Candidate, run_seed: int, epochs: int, config: EvaluateConfig, precision: str,
                  protocol_key: dict | None) -> str:
    """The baseline-cache key of one full-data network of ``rank-nets``: the candidate, seed, epochs, protocol and
    everything else the caller says the result depends on (data, augmentation, device)."""
    protocol = {k: v for k, v in dataclasses.asdict(config).items() if k in ("lr", "momentum", "weight_decay", "batch_size", "test_batch")}
    protocol["epochs"] = epochs
    key = ["rank_nets_full", candidate.net, candidate.kwargs, run_seed, protocol, precision, protocol_key or {}]
    return json.dumps(key, sort_keys=True)


def _measure(candidate: Candidate, source: str, sources: _Sources, test: tuple[torch.Tensor, torch.Tensor],
             config: EvaluateConfig, epochs: int, baselines: BaselineCache, protocol_key: dict | None, bar) -> dict:
    """``config.runs`` networks of one candidate on one source: test accuracy and training seconds per run (the
    test pass excluded); full-data runs come from, and go to, the baseline cache."""
    real, results, keys, trainings = sources.real, {}, {}, {}
    for run in range(config.runs):
        run_seed = real.seed * 1000 + run
        if source == "full":
            keys[run] = full_data_key(candidate, run_seed, epochs, config, real.precision, protocol_key)
            cached = baselines.get(keys[run])
            if cached is not None and "seconds" in cached:
                results[run] = {**cached, "cached": True}
                bar.update(1)
                continue
        images, labels = sources.images(source, run_seed)
        trainings[run] = dataclasses.replace(real, images=images, labels=labels, seed=run_seed)
    if trainings:
        runs, mark = list(trainings), [time.perf_counter()]

        def measured(index: int, model: torch.nn.Module) -> None:
            seconds = time.perf_counter() - mark[0]  # stacked networks: the first of the group carries the time
            results[runs[index]] = {"test": accuracy(model, *test, real.normalize, real.device, config.test_batch,
                                                     real.precision), "seconds": seconds}
            if runs[index] in keys:
                baselines.put(keys[runs[index]], results[runs[index]])
            bar.update(1)
            mark[0] = time.perf_counter()

        train_classifiers(list(trainings.values()), config, net=candidate.net, epochs=epochs, on_trained=measured,
                          batched=use_batched(config.batched, real.device), net_kwargs=candidate.kwargs)
    values = [results[run] for run in range(config.runs)]
    row = {**summarize([v["test"] for v in values]), "seconds": round(sum(v["seconds"] for v in values), 3)}
    if source == "full":
        row["cached_runs"] = sum(bool(v.get("cached")) for v in values)
    return row


def rank_candidates(
    found: list[Candidate],
    distilled_images: torch.Tensor,
    distilled_labels: torch.Tensor,
    real: ClassifierTraining,
    train_rows: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    config: EvaluateConfig,
    full_epochs: int | None = None,
    baselines: BaselineCache | None = None,
    protocol_key: dict | None = None,
    soft_labels: torch.Tensor | None = None,
    random_real_ipc: int | None = None,
    progress: bool = True,
) -> dict:
    """Train every candidate on the distilled set and the random real subsets (``config.epochs``) and on the full
    training rows (``full_epochs``, default ``config.full_epochs``), ``config.runs`` seeds each, and compare the
    proxies' rankings with the full data's. ``real`` holds every train image and the protocol (normalisation,
    augmentation, seed, device, precision); ``baselines`` with ``protocol_key`` keeps the full-data results, with
    the seconds they took. With ``soft_labels`` the distilled networks train on them. Returns a JSON-ready dict."""
    if len(found) < 2:
        raise LatentDistillError(f"rank-nets ranks architectures: name at least two candidates, got {len(found)}")
    baselines = baselines or BaselineCache(None)
    ipc = int(torch.bincount(distilled_labels).max())
    full_epochs = full_epochs or config.full_epochs
    targets = distilled_labels if soft_labels is None else soft_labels.float()
    sources = _Sources(real, train_rows, (distilled_images, targets), random_real_ipc or ipc)
    bar = tqdm(total=len(found) * len(SOURCES) * config.runs, desc="rank-nets", disable=not progress, unit="net")
    rows = []
    for candidate in found:
        row = {"name": candidate.name, "net": candidate.net, "kwargs": dict(candidate.kwargs)}
        for source in SOURCES:
            epochs = full_epochs if source == "full" else config.epochs
            row[source] = _measure(candidate, source, sources, (test_images, test_labels), config, epochs, baselines,
                                   protocol_key, bar)
        rows.append(row)
    bar.close()
    report = {"ipc": ipc, "random_real_ipc": random_real_ipc or ipc, "runs": config.runs, "epochs": config.epochs,
              "full_epochs": full_epochs, "labels": "hard" if soft_labels is None else "soft", "candidates": rows}
    report.update(compare(rows))
    return report


def compare(rows: list[dict]) -> dict:
    """Each proxy against the full data, from the reported mean test accuracies (so ``rank_nets.json`` reproduces
    them). ``best``: every candidate at the top mean (several on a tie); ``same_best``: the proxy's pick (its first
    best, in candidate order: what a search would take) is a best candidate of the full data. ``time_saved``: full
    seconds / proxy seconds, training only; a cached full-data network counts the seconds recorded when it trained."""
    names = [row["name"] for row in rows]
    full = [row["full"]["mean"] for row in rows]
    full_seconds = sum(row["full"]["seconds"] for row in rows)
    result = {"full": {"best": best(names, full), "seconds": round(full_seconds, 2),
                       "cached_runs": sum(row["full"]["cached_runs"] for row in rows)}}
    for source in PROXIES:
        proxy = [row[source]["mean"] for row in rows]
        seconds = sum(row[source]["seconds"] for row in rows)
        rho, tau = spearman(proxy, full), kendall_tau_b(proxy, full)
        result[source] = {"spearman": None if rho is None else round(rho, 4),
                          "kendall_tau_b": None if tau is None else round(tau, 4),
                          "same_best": best(names, proxy)[0] in result["full"]["best"], "best": best(names, proxy),
                          "seconds": round(seconds, 2),
                          "time_saved": round(full_seconds / seconds, 2) if seconds > 0 else None}
    return result


def markdown_table(report: dict) -> str:
    """Per candidate: mean ± std test accuracy and training seconds of each source; then one row per proxy."""
    runs, epochs, full_epochs = report["runs"], report["epochs"], report["full_epochs"]
    header = ["candidate", f"distilled ({epochs} ep)", f"random real IPC {report['random_real_ipc']} ({epochs} ep)",
              f"full data ({full_epochs} ep)", "seconds distilled / random / full"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["candidates"]:
        cells = [row["name"]] + [f"{row[s]['mean']:.2f} ± {row[s]['std']:.2f}" for s in SOURCES]
        cached = " (cached)" if row["full"]["cached_runs"] == runs else ""
        cells.append(" / ".join(f"{row[s]['seconds']:.2f}" for s in SOURCES) + cached)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| proxy | Spearman | Kendall tau-b | same best | best | seconds | time saved |", "|" + "---|" * 7]
    for source in PROXIES:
        entry = report[source]
        cells = [source.replace("_", " "), _number(entry["spearman"]), _number(entry["kendall_tau_b"]),
                 "yes" if entry["same_best"] else "no", ", ".join(entry["best"]), f"{entry['seconds']:.2f}",
                 "" if entry["time_saved"] is None else f"{entry['time_saved']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    full = report["full"]
    lines.append(f"full data: best {', '.join(full['best'])}, {full['seconds']:.2f} s of training "
                 f"({full['cached_runs']} of {len(report['candidates']) * runs} networks from the cache, at their recorded seconds)")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = ["Candidate", "candidates", "compare", "full_data_key", "markdown_table", "rank_candidates"]
