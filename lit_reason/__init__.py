"""lit-reason: a PyTorch Lightning framework for reinforcement learning of LLM reasoning."""

__version__ = "0.1.0"
