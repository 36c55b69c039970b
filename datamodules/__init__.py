"""Reasoning DataModules: each yields lists of Problems (see lit_reason.tasks.problem)."""

from datamodules.base import ProblemDataModule, ProblemDataset, collate_problems
from datamodules.custom import CustomDataModule
from datamodules.enigmata.datamodule import EnigmataDataModule
from datamodules.math_data import MathDataModule
from datamodules.mixture import MixtureDataModule
from datamodules.reasoning_gym.datamodule import ReasoningGymDataModule  # needs reasoning-gym only when built
from datamodules.toy import ToyDataModule
from datamodules.verifiers_data import VerifiersDataModule  # needs verifiers only when built

__all__ = ["ProblemDataModule", "ProblemDataset", "collate_problems", "ToyDataModule", "MathDataModule", "EnigmataDataModule",
           "ReasoningGymDataModule", "MixtureDataModule", "CustomDataModule", "VerifiersDataModule"]
