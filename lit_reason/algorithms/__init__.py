"""The math of the methods as pure functions on tensors: GRPO objectives and advantages, NTHR
influence, HRPO mixing, pass@k, LM-head statistics. Imports nothing else from lit_reason."""
