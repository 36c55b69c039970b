"""Reasoning DataModules: each yields lists of Problems (see lit_reason.problem)."""

from datamodules.base import ProblemDataModule, ProblemDataset, collate_problems
from datamodules.enigmata.datamodule import EnigmataDataModule
from datamodules.math_data import MathDataModule
from datamodules.toy import ToyDataModule

__all__ = ["ProblemDataModule", "ProblemDataset", "collate_problems", "ToyDataModule", "MathDataModule", "EnigmataDataModule"]
