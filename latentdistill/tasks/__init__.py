"""Tasks: what differs between classification and super-resolution, and nothing else.

A task owns its data preparation (latent cache and splits; SR patches, pools and pseudo-classes), the
loss its networks train on (handed to every objective as a ``Criterion``), its evaluation (networks,
baselines, metrics) and its summary table. One distillation loop and one set of objectives serve
every task. A task is built from the run config, ``TASKS.build(config.task, config)``; your own is a
class registered with ``@TASKS.register("name")`` that has the methods of ``tasks.base.Task``.
"""

from latentdistill.tasks.base import TASKS, Task, build_task
from latentdistill.tasks.classification import ClassificationTask
from latentdistill.tasks.super_resolution import SuperResolutionTask

__all__ = ["TASKS", "ClassificationTask", "SuperResolutionTask", "Task", "build_task"]
