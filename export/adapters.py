"""Merging a task's LoRA adapter into the backbone, strictly.

The base repo ships plain LoRA adapters: `adapters/<task>/adapter_config.json` and
`adapter_model.safetensors`. A partial merge would silently give base-model vectors labelled as
the task, and the oracle, built from the same merged model, would not notice. So the adapter's
config is checked against what is merged here, and every stored tensor must land on a module
(and every LoRA module must get its tensors) before the merge.
"""

from __future__ import annotations

import json
from pathlib import Path

from embedrpc.export.errors import ExportError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_LISTED = 3


def check_config(adapter_dir: Path, task: str) -> dict:
    """The adapter's config, or one line naming everything a plain LoRA merge cannot honour."""
    try:
        config = json.loads((adapter_dir / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"adapter {task}: unreadable {CONFIG_NAME}: {exc}") from exc
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} is not LORA")
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets:
        problems.append(f"target_modules {targets!r} is not a list of module names")
    elif unknown := sorted(set(targets) - set(LORA_TARGETS)):
        problems.append(f"target_modules {', '.join(unknown)} are not Qwen3 projections")
    if not isinstance(config.get("r"), int) or config["r"] < 1:
        problems.append(f"r {config.get('r')!r} is not a positive rank")
    if not isinstance(config.get("lora_alpha"), (int, float)):
        problems.append(f"lora_alpha {config.get('lora_alpha')!r} is not a number")
    for option in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if config.get(option):
            problems.append(f"{option} is set")
    for option in ("modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform"):
        if config.get(option):
            problems.append(f"{option} is set")
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config['bias']!r} is not 'none'")
    if problems:
        raise ExportError(f"adapter {task} ({adapter_dir / CONFIG_NAME}): "
                          f"{'; '.join(problems)}; only plain LoRA is merged")
    return config


def merge_lora(model, adapter_dir: Path, task: str):
    """`model` with the adapter merged; raises ExportError unless every tensor landed."""
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    check_config(adapter_dir, task)
    try:
        stored = load_file(adapter_dir / WEIGHTS_NAME)
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
    except Exception as exc:  # safetensors and peft raise many types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"adapter {task}: cannot load {adapter_dir}: {reason}") from exc
    loaded = get_peft_model_state_dict(peft_model)
    stray, unfed = sorted(set(stored) - set(loaded)), sorted(set(loaded) - set(stored))
    differing = sorted(key for key in set(stored) & set(loaded)
                       if not torch.equal(stored[key].to(loaded[key].dtype), loaded[key]))
    problems = [f"{len(keys)} {label} ({', '.join(keys[:_LISTED])}"
                f"{', ...' if len(keys) > _LISTED else ''})"
                for label, keys in (("stored tensors land on no module", stray),
                                    ("LoRA weights have no stored tensor", unfed),
                                    ("tensors were not loaded as stored", differing)) if keys]
    if problems:
        raise ExportError(f"adapter {task} does not fit the backbone: {'; '.join(problems)}; "
                          f"not merged")
    return peft_model.merge_and_unload()
