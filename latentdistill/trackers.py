"""Optional experiment trackers (``log_with: [tensorboard]``, or wandb, mlflow, aim, ...), through accelerate's
tracker classes. ``distill_log.jsonl`` stays the record of a run; a tracker is a view of it, and none is needed."""

from __future__ import annotations

from pathlib import Path

from latentdistill.errors import LatentDistillError


class Trackers:
    """The trackers ``names`` names, started for one run (``run_name``) with its resolved config; ``log`` sends
    each iteration's record to all of them, ``finish`` closes them. No names: nothing is imported or done."""

    def __init__(self, names: list[str], run_name: str, directory: Path, config: dict):
        self.trackers = []
        if not names:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        check_tracker_names(names)
        for name in names:
            kind = LOGGER_TYPE_TO_CLASS[name]
            try:
                tracker = kind(run_name, str(directory)) if kind.requires_logging_directory else kind(run_name)
                if hasattr(tracker, "start"):  # accelerate >= 1.0 opens a tracker in start()
                    tracker.start()
                tracker.store_init_configuration(_flat(config))
            except ImportError as error:
                raise LatentDistillError(f"config key 'log_with': tracker '{name}' needs its package "
                                         f"({str(error).splitlines()[0]})") from None
            self.trackers.append(tracker)

    def log(self, record: dict) -> None:
        values = {key: value for key, value in record.items() if key != "iteration" and isinstance(value, (int, float))}
        for tracker in self.trackers:
            tracker.log(values, step=record.get("iteration"))

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def _flat(values: dict, prefix: str = "") -> dict:
    """A nested config as ``{"distill.lr": 0.01, ...}``, lists written out as text (trackers store scalars)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def check_tracker_names(names: list[str]) -> None:
    """Refuse a tracker accelerate does not know, before any work."""
    if not names:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise LatentDistillError(f"config key 'log_with': unknown tracker '{name}' "
                                     f"(known: {', '.join(sorted(LOGGER_TYPE_TO_CLASS))})")
