"""Utilities every layer may use: config dataclasses, optimizers and schedules, RNG state, quiet logs."""
