"""What changed between a checkpoint and the config that resumes from it.

On resume the config wins (the same for ``--ckpt_path last`` and an explicit file; LightningCLI's
own habit of loading the checkpoint's settings over the config is switched off in the CLI). Every
setting that differs is listed in one warning; the ones the saved weights cannot follow stop the
run in one line: another model, another LoRA shape, or a KL reference that appears or disappears
(``beta`` 0 <-> non-zero: the reference's weights are in the checkpoint or not).
"""

from __future__ import annotations

from typing import Any, Mapping

from lightning.pytorch.utilities import rank_zero_warn

from lit_reason.utils.faults import BadCheckpoint

_NOT_SETTINGS = {"_class_path", "_instantiator"}


def _shape(lora: Any) -> Any:
    return None if not lora else (lora.get("r"), sorted(lora.get("target_modules") or []))


def frozen_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The changes a checkpoint cannot be resumed under, one phrase each."""
    problems = []
    if "model" in saved and saved.get("model") != current.get("model"):
        problems.append(f"model.model {saved.get('model')!r} -> {current.get('model')!r}")
    if "lora" in saved and _shape(saved.get("lora")) != _shape(current.get("lora")):
        problems.append(f"model.lora (r, target_modules) {_shape(saved.get('lora'))} -> {_shape(current.get('lora'))}")
    had_reference, has_reference = bool(saved.get("beta")), bool(current.get("beta"))
    if "beta" in saved and had_reference != has_reference:
        problems.append(f"model.beta {saved.get('beta')} -> {current.get('beta')} (the KL reference "
                        f"{'disappears' if had_reference else 'appears'})")
    return problems


def changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str) -> list[str]:
    """``prefix.key old -> new`` for each setting whose value differs (keys of either side)."""
    keys = sorted((set(saved) | set(current)) - _NOT_SETTINGS)
    missing = object()
    return [f"{prefix}.{k} {saved.get(k, missing)!r} -> {current.get(k, missing)!r}".replace(repr(missing), "unset")
            for k in keys if saved.get(k, missing) != current.get(k, missing)]


def class_mismatch(saved: Mapping[str, Any], module: Any) -> str | None:
    """The saved module class when it is not ``module``'s (only checkpoints written through the CLI record it)."""
    saved_class = str(saved.get("_class_path") or "").rsplit(".", 1)[-1]
    return saved_class if saved_class and saved_class != type(module).__name__ else None


def state_dict_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first missing and unexpected weight names, or None when the names agree."""
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if not missing and not unexpected:
        return None
    return f"{len(missing)} weights missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"


def check_resume(module: Any, checkpoint: Mapping[str, Any]) -> None:
    """Stop (``BadCheckpoint``, one line) on another module class, a frozen change or weights that do
    not fit the model; warn once listing every other changed setting (the config's values apply)."""
    trainer = getattr(module, "_trainer", None)
    path = getattr(trainer, "ckpt_path", None) or "the checkpoint"
    saved = dict(checkpoint.get("hyper_parameters") or {})
    other = class_mismatch(saved, module)
    if other is not None:
        raise BadCheckpoint(f"checkpoint {path} was written by {other}, the config trains {type(module).__name__}: "
                            f"resume with model.class_path {other}, or start a new run without --ckpt_path")
    frozen = frozen_changes(saved, module.hparams)
    if frozen:
        raise BadCheckpoint(f"checkpoint {path} cannot resume under this config: {'; '.join(frozen)}; these must "
                            "stay as saved (start a new run without --ckpt_path to change them)")
    if "state_dict" in checkpoint:
        mismatch = state_dict_mismatch(checkpoint["state_dict"], module.state_dict())
        if mismatch is not None:
            raise BadCheckpoint(f"checkpoint {path} does not fit model {module.hparams.get('model')!r}: {mismatch}")
    changes = changed_settings(saved, dict(module.hparams), "model")
    data = getattr(trainer, "datamodule", None)
    if data is not None and checkpoint.get("datamodule_hyper_parameters") is not None:
        changes += changed_settings(dict(checkpoint["datamodule_hyper_parameters"]), dict(data.hparams), "data")
    if changes:
        rank_zero_warn(f"resuming from {path} with {len(changes)} changed setting(s), the config's values apply: "
                       + ", ".join(changes))



class _KeepConfigSettings:
    """Optimizer load pre-hook: every saved group's settings replaced by the ones built from the config."""

    def __init__(self, optimizer: Any) -> None:
        self.fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]

    def __call__(self, optimizer: Any, state: dict) -> dict:
        for group, new in zip(state["param_groups"], self.fresh):
            group.update(new)
        return state


def follow_config_on_resume(optimizer: Any) -> None:
    """Lightning restores the optimizer's saved state over the one just built from the config, its
    settings included (each group's lr, weight_decay, betas), so a changed ``model.lr`` was silently
    ignored. With this hook the saved moments and step count still load and the settings stay the
    config's (the schedule keeps its base LRs too: lit_reason.utils.optim.ConfiguredLambdaLR).
    Unchanged settings load to the same values."""
    optimizer.register_load_state_dict_pre_hook(_KeepConfigSettings(optimizer))
