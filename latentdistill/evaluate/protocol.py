"""What a distilled file decides about its own evaluation, whatever the config says."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from latentdistill.config import EvaluateConfig, RunConfig
from latentdistill.errors import LatentDistillError
from latentdistill.export import DistilledSet


def file_protocol(distilled: DistilledSet, source: Path, config: RunConfig) -> tuple[RunConfig, EvaluateConfig, list[str]]:
    """The config an evaluation of ``distilled`` runs with, the evaluation section it trains with, and notes on
    what the file decided: ZCA when the set was distilled for whitened inputs (whatever ``data.zca`` says), and
    the learned student lr under ``evaluate.lr: learned``. Refuses soft rows for a file without soft labels."""
    notes = []
    # The statistics the set was made for: a whitened set's stated ones (its ZCA is refitted under them), else
    # those our file records; a run normalised otherwise would see other inputs than the set was made for.
    recorded = distilled.metadata.get("whitened") or distilled.metadata.get("normalization")
    if recorded and [config.data.mean, config.data.std] != [recorded["mean"], recorded["std"]]:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, mean=list(recorded["mean"]),
                                                                      std=list(recorded["std"])))
        notes.append(f"normalised with the statistics {source} was made for (mean {recorded['mean']}, std "
                     f"{recorded['std']}), whatever data.mean/data.std say")
    recorded_zca = distilled.metadata.get("zca")
    if recorded_zca is not None and (not config.data.zca or config.data.zca_eps != recorded_zca["eps"]):
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, zca=True, zca_eps=recorded_zca["eps"]))
        notes.append(f"ZCA (eps {recorded_zca['eps']}) applied as {source} records it, whatever data.zca says")
    elif "zca" in distilled.metadata and recorded_zca is None and config.data.zca:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, zca=False))
        notes.append(f"no ZCA: {source} was distilled without it, whatever data.zca says")
    evaluation = config.evaluate
    if evaluation.lr == "learned":
        learned = distilled.metadata.get("learned", {}).get("synthetic_lr")
        if learned is None:
            raise LatentDistillError(f"config key 'evaluate.lr' is 'learned' but {source} holds no learned learning rate "
                                     "(metadata 'learned.synthetic_lr', written by objective mtt)")
        evaluation = dataclasses.replace(evaluation, lr=float(learned))
        notes.append(f"every network trained with the learned lr {float(learned):.5g} from {source} (evaluate.lr=learned)")
    if evaluation.labels == "soft" and distilled.soft_labels is None:
        raise LatentDistillError(f"config key 'evaluate.labels' is 'soft' but {source} holds no soft_labels "
                                 "(distill with distill.learn_labels=true)")
    return config, evaluation, notes
