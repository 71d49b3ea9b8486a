"""Every bad export input is a one-line error, a non-zero exit, and no bundle left behind."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from embedrpc.export import onnx_export
from embedrpc.export.staging import restore_interrupted_publish
from embedrpc.service.bundle import formats
from embedrpc.service.cli import main

pytestmark = pytest.mark.heavy


def run_export(capsys, *args) -> tuple[int, str]:
    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err


def only_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("embedrpc: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def assert_nothing_written(parent, name="out"):
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.partial-")]


def test_unknown_local_path(capsys, tmp_path):
    code, err = run_export(capsys, tmp_path / "nope" / "model", "--out", tmp_path / "out")
    assert code == 2
    assert "no such directory, and not a hub id" in only_error_line(err)


def test_unknown_hub_id_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_export(capsys, "no-such-org/no-such-model", "--out", tmp_path / "out")
    assert code == 2
    assert "cannot download no-such-org/no-such-model" in only_error_line(err)
    assert_nothing_written(tmp_path)


def test_unsupported_architecture(capsys, tmp_path):
    checkpoint = tmp_path / "bert"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertModel"]}))
    code, err = run_export(capsys, checkpoint, "--out", tmp_path / "out")
    assert code == 2
    assert ("model_type 'bert' (BertModel) is not supported; supported: qwen3, "
            "jina_embeddings_v5") in only_error_line(err)


def test_non_empty_out_needs_force(capsys, tmp_path, eos_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, err = run_export(capsys, eos_checkpoint, "--out", out)
    assert code == 2
    assert "exists and is not empty; pass --force" in only_error_line(err)
    assert (out / "keep.txt").read_text() == "precious"


def test_unknown_format(capsys, tmp_path, eos_checkpoint):
    code, err = run_export(capsys, eos_checkpoint, "--out", tmp_path / "out",
                           "--formats", "onnx-fp32,tflite")
    assert code == 2
    assert "unknown format 'tflite'" in only_error_line(err)
    assert_nothing_written(tmp_path)


def test_base_repo_needs_a_task(capsys, tmp_path, adapter_checkpoint):
    code, err = run_export(capsys, adapter_checkpoint, "--out", tmp_path / "out")
    assert code == 2
    assert ("task adapters (classification, clustering, retrieval, text-matching); choose one "
            "with --task") in only_error_line(err)


def test_task_without_adapter(capsys, tmp_path, adapter_checkpoint):
    base = tmp_path / "base"
    shutil.copytree(adapter_checkpoint, base)
    shutil.rmtree(base / "adapters" / "clustering")
    code, err = run_export(capsys, base, "--out", tmp_path / "out", "--task", "clustering")
    assert code == 2
    assert "has no adapter for task 'clustering'; it has classification, retrieval, " \
        "text-matching" in only_error_line(err)


def test_task_the_config_does_not_declare(capsys, tmp_path, adapter_checkpoint):
    base = tmp_path / "base"
    shutil.copytree(adapter_checkpoint, base)
    config = json.loads((base / "config.json").read_text())
    config["task_names"] = ["retrieval", "text-matching"]
    (base / "config.json").write_text(json.dumps(config))
    code, err = run_export(capsys, base, "--out", tmp_path / "out", "--task", "clustering")
    assert code == 2
    assert "declares tasks retrieval, text-matching (config.json task_names), not 'clustering'" \
        in only_error_line(err)


def test_jina_config_that_is_not_a_qwen3_shape(capsys, tmp_path):
    checkpoint = tmp_path / "odd"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(
        {"model_type": "jina_embeddings_v5", "architectures": ["JinaEmbeddingsV5Model"],
         "hidden_size": 64, "num_hidden_layers": 2}))
    code, err = run_export(capsys, checkpoint, "--out", tmp_path / "out")
    assert code == 2
    assert ("model_type 'jina_embeddings_v5' (JinaEmbeddingsV5Model) is not a Qwen3 shape: "
            "config.json lacks intermediate_size, num_attention_heads") in only_error_line(err)


def _base_with_edited_adapter(source, target, edit) -> None:
    shutil.copytree(source, target)
    edit(target / "adapters" / "text-matching")


def test_misnamed_adapter_key_fails_the_merge(capsys, tmp_path, adapter_checkpoint):
    """A silent partial merge would give base-model vectors labelled as the task."""
    from safetensors.torch import load_file, save_file

    def misname(adapter):
        tensors = load_file(adapter / "adapter_model.safetensors")
        key = "base_model.model.layers.0.self_attn.q_proj.lora_A.weight"
        tensors[key.replace("q_proj", "q_prj")] = tensors.pop(key)
        save_file(tensors, adapter / "adapter_model.safetensors")

    _base_with_edited_adapter(adapter_checkpoint, tmp_path / "base", misname)
    code, err = run_export(capsys, tmp_path / "base", "--out", tmp_path / "out", "--task",
                           "text-matching")
    assert code == 2
    assert only_error_line(err) == (
        "embedrpc: error: adapter text-matching does not fit the backbone: 1 stored tensors "
        "land on no module (base_model.model.layers.0.self_attn.q_prj.lora_A.weight); 1 LoRA "
        "weights have no stored tensor (base_model.model.layers.0.self_attn.q_proj.lora_A."
        "weight); not merged")
    assert_nothing_written(tmp_path)


def test_adapter_options_a_plain_merge_cannot_honour(capsys, tmp_path, adapter_checkpoint):
    def dora(adapter):
        config = json.loads((adapter / "adapter_config.json").read_text())
        config.update(use_dora=True, modules_to_save=["norm"])
        (adapter / "adapter_config.json").write_text(json.dumps(config))

    _base_with_edited_adapter(adapter_checkpoint, tmp_path / "base", dora)
    code, err = run_export(capsys, tmp_path / "base", "--out", tmp_path / "out", "--task",
                           "text-matching")
    assert code == 2
    line = only_error_line(err)
    assert line.startswith("embedrpc: error: adapter text-matching (") and line.endswith(
        "adapter_config.json): use_dora is set; modules_to_save is set; only plain LoRA is "
        "merged")


def test_task_on_merged_checkpoint(capsys, tmp_path, eos_checkpoint):
    code, err = run_export(capsys, eos_checkpoint, "--out", tmp_path / "out",
                           "--task", "retrieval")
    assert code == 2
    assert "cannot serve task 'retrieval': omit --task" in only_error_line(err)


def test_merged_checkpoint_named_for_its_task(capsys, tmp_path, eos_checkpoint):
    """A `...-retrieval` checkpoint accepts --task retrieval (and records it) without adapters."""
    named = tmp_path / "jina-embeddings-v5-text-small-retrieval"
    shutil.copytree(eos_checkpoint, named)
    code, _ = run_export(capsys, named, "--out", tmp_path / "out", "--task", "retrieval",
                         "--formats", "onnx-fp32", "--probe-max-tokens", "32")
    assert code == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["source"]["task"] == \
        "retrieval"


def test_interrupted_export_leaves_no_bundle(capsys, tmp_path, eos_checkpoint, monkeypatch):
    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_export, "quantize_int8", disk_full)
    code, err = run_export(capsys, eos_checkpoint, "--out", tmp_path / "out",
                           "--probe-max-tokens", "32")
    assert code == 2
    assert "No space left on device" in only_error_line(err)
    assert_nothing_written(tmp_path)


def test_parity_below_bar_fails(capsys, tmp_path, eos_checkpoint, monkeypatch):
    strict = dataclasses.replace(formats.ONNX_INT8, bar=0.9999999)
    monkeypatch.setitem(formats.FORMATS, strict.name, strict)
    monkeypatch.setattr(formats, "LOSSY_BELOW", 1.0)  # still lossy, as the manifest must say
    code, err = run_export(capsys, eos_checkpoint, "--out", tmp_path / "out",
                           "--formats", "onnx-int8", "--probe-max-tokens", "32")
    assert code == 2
    assert "parity below bar for onnx-int8" in only_error_line(err)
    assert "BELOW BAR" in err
    assert_nothing_written(tmp_path)


def test_replacing_with_force(capsys, tmp_path, eos_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, _ = run_export(capsys, eos_checkpoint, "--out", out, "--force",
                         "--formats", "onnx-fp32", "--probe-max-tokens", "32")
    assert code == 0
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_crash_while_measuring_parity_fails_that_artifact(capsys, tmp_path, eos_checkpoint,
                                                          crash_in_child):
    crash_in_child("gguf-q8_0")
    code, err = run_export(capsys, eos_checkpoint, "--out", tmp_path / "out",
                           "--formats", "onnx-fp32,gguf-q8_0", "--probe-max-tokens", "32")
    assert code == 2
    assert only_error_line(err) == ("embedrpc: error: gguf-q8_0: llama.cpp crashed (SIGSEGV) on "
                                    "this host while measuring parity; bundle not written")
    assert "FAILED: crashed (SIGSEGV)" in err  # in the parity table, beside onnx-fp32's row
    assert_nothing_written(tmp_path)


def test_killed_export_leaves_nothing_the_next_one_trips_on(capsys, tmp_path, eos_checkpoint):
    out = tmp_path / "out"
    args = [eos_checkpoint, "--out", out, "--formats", "onnx-fp32", "--probe-max-tokens", "32"]
    exporter = subprocess.Popen([sys.executable, "-m", "embedrpc.service.cli", "export",
                                 *map(str, args)], stderr=subprocess.PIPE, text=True)
    for line in exporter.stderr:
        if line.startswith("[export] writing onnx-fp32"):
            break
    exporter.kill()  # as SIGKILL or a power loss would: no clean-up runs
    exporter.wait(30)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    code, _ = run_export(capsys, *args)
    assert code == 0 and (out / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_publish_cut_between_its_renames_gets_the_previous_bundle_back(tmp_path):
    aside = tmp_path / ".out.replaced"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    restore_interrupted_publish(tmp_path / "out")
    assert (tmp_path / "out" / "manifest.json").is_file() and not aside.exists()
