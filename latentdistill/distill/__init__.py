"""The synthetic set, its augmentation, the objectives and the loop that optimises it."""

from latentdistill.distill.augment import AugmentParams, DifferentiableAugment
from latentdistill.distill.gradient_matching import GradientMatching, gradient_distance
from latentdistill.distill.loop import distill
from latentdistill.distill.synthetic import SyntheticSet, initial_synthetic_set

__all__ = ["AugmentParams", "DifferentiableAugment", "GradientMatching", "SyntheticSet", "distill",
           "gradient_distance", "initial_synthetic_set"]
