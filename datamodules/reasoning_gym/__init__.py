"""reasoning-gym inside lit-reason: its seeded generators and scorers as a DataModule.

Needs the optional ``reasoning-gym`` package (``pip install 'lit-reason[reasoning-gym]'``);
importing this package works without it, building the DataModule then says how to install it.
"""

from datamodules.reasoning_gym.datamodule import ReasoningGymDataModule
from datamodules.reasoning_gym.problem import ReasoningGymProblem

__all__ = ["ReasoningGymDataModule", "ReasoningGymProblem"]
