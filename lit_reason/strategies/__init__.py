"""Glue for Lightning strategies (FSDP1, FSDP2, DeepSpeed) as plain functions the modules call."""
