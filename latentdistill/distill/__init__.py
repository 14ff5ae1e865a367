"""The synthetic set, its augmentation, the objectives and the loop that optimises it."""

from latentdistill.distill.augment import AugmentParams, DifferentiableAugment
from latentdistill.distill.buffer import ExpertBuffer, load_buffer, train_experts
from latentdistill.distill.distribution_matching import DistributionMatching
from latentdistill.distill.gradient_matching import GradientMatching, gradient_distance
from latentdistill.distill.loop import OBJECTIVES, build_objective, distill
from latentdistill.distill.objective import IterationContext
from latentdistill.distill.synthetic import SyntheticSet, initial_synthetic_set, kmeans
from latentdistill.distill.trajectory_matching import TrajectoryMatching

__all__ = ["OBJECTIVES", "AugmentParams", "DifferentiableAugment", "DistributionMatching", "ExpertBuffer",
           "GradientMatching", "IterationContext", "SyntheticSet", "TrajectoryMatching", "build_objective", "distill",
           "gradient_distance", "initial_synthetic_set", "kmeans", "load_buffer", "train_experts"]
