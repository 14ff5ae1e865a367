"""The synthetic set, its augmentation, the objectives and the one loop that optimises it.

Importing the package registers the built-in objectives (gm, dm, mtt, pm) in ``OBJECTIVES``.
"""

from latentdistill.distill.augment import AugmentParams, DifferentiableAugment
from latentdistill.distill.buffer import ExpertBuffer, load_buffer, train_experts
from latentdistill.distill.distribution_matching import DistributionMatching
from latentdistill.distill.gradient_matching import GradientMatching, gradient_distance
from latentdistill.distill.loop import MatchingProblem, distill
from latentdistill.distill.objective import OBJECTIVES, IterationContext, ObjectiveSetup, build_objective
from latentdistill.distill.performance_matching import PerformanceMatching
from latentdistill.distill.synthetic import ImageGenerator, SyntheticSet, initial_synthetic_set, kmeans
from latentdistill.distill.trajectory_matching import TrajectoryMatching

__all__ = ["OBJECTIVES", "AugmentParams", "DifferentiableAugment", "DistributionMatching", "ExpertBuffer",
           "GradientMatching", "ImageGenerator", "IterationContext", "MatchingProblem", "ObjectiveSetup", "PerformanceMatching", "SyntheticSet",
           "TrajectoryMatching", "build_objective", "distill", "gradient_distance", "initial_synthetic_set", "kmeans",
           "load_buffer", "train_experts"]
