"""``rank-nets`` for a classification set: the file checked against the config as ``ClassificationTask.evaluate``
checks it, the real data and protocol prepared as that evaluation prepares them (the file's ZCA and learned lr,
the same normalisation, augmentation and baseline cache), then ``evaluate.rank_nets.rank_candidates``."""

from __future__ import annotations

from pathlib import Path

from latentdistill.config import RunConfig
from latentdistill.evaluate.rank_nets import Candidate, rank_candidates
from latentdistill.export import DistilledSet
from latentdistill.tasks.classification import ClassificationTask
from latentdistill.tasks.judging import prepare_judging


def rank_distilled(config: RunConfig, distilled: DistilledSet, source: Path, found: list[Candidate],
                   full_epochs: int | None = None, progress: bool = True) -> dict:
    """Rank ``found`` on the set, on random real subsets and on the full data; the report with its protocol.

    Distilled and random real networks train ``evaluate.epochs``, full-data ones ``full_epochs`` (default
    ``evaluate.full_epochs``); full-data results are kept in the train cache's baselines file when
    ``evaluate.reuse_baselines``. With ``evaluate.labels: soft`` the distilled networks train on the file's soft
    labels (the random real ones on their hard labels)."""
    judging = prepare_judging(ClassificationTask, config, distilled, source, progress)
    config, evaluation, task, data, device = judging.config, judging.evaluation, judging.task, judging.data, judging.device
    report = rank_candidates(
        found, judging.images, distilled.labels, judging.real, data.train_rows, data.test.images, data.test.labels,
        evaluation, full_epochs=full_epochs, baselines=judging.baselines, protocol_key=judging.protocol_key,
        soft_labels=distilled.soft_labels if evaluation.labels == "soft" else None,
        random_real_ipc=distilled.metadata.get("storage_ipc"),  # per byte: the real images of the same bytes
        progress=progress,
    )
    protocol = {"lr": evaluation.lr, "selection": "none: last epoch, tested once on the real test split",
                "seconds": "training only (test passes excluded); a cached full-data network counts the seconds "
                           "recorded when it trained",
                "zca": {"eps": data.zca.eps, "fingerprint": data.zca.fingerprint} if data.zca is not None else None}
    protocol.update({k: v for k, v in task.protocol(evaluation, device).items() if k != "full_data_epochs"})
    return {"dataset": distilled.metadata.get("dataset", Path(config.data.root).name), "protocol": protocol,
            "notes": judging.notes, **report}
