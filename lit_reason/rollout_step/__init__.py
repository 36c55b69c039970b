"""The rollout step: how a batch of problems becomes the scored rollout a module trains on.

``contract.py`` (ScoredRollout, RolloutStep), ``sampling.py`` (SampleNow: sample with the current
weights), ``dynamic_sampling.py`` (DAPO's refills of uninformative groups). A module calls
``self.rollout_step(self, batch)``; replace the step (``build_rollout_step``) to change how rollouts
are produced without touching the module.
"""

from lit_reason.rollout_step.contract import RolloutStep, ScoredRollout
from lit_reason.rollout_step.dynamic_sampling import DynamicSampling
from lit_reason.rollout_step.sampling import SampleNow

__all__ = ["DynamicSampling", "RolloutStep", "SampleNow", "ScoredRollout"]
