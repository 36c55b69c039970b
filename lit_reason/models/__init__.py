"""Models: loading a policy (presets, the built-in pretrained model, any HF causal LM), LoRA, the
KL reference, checkpoints of adapters, the backbone/head split, and exporting a trained policy."""
