"""Train-from-scratch evaluation of distilled sets, beside the random real baseline."""

from latentdistill.evaluate.classification import (
    accuracy,
    evaluate_classification,
    markdown_table,
    train_classifier,
)

__all__ = ["accuracy", "evaluate_classification", "markdown_table", "train_classifier"]
