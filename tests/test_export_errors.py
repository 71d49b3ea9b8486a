"""Every bad export input is a one-line error, a non-zero exit, and no bundle left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from embedrpc.export import pipeline
from embedrpc.export.staging import restore_interrupted_publish
from embedrpc.service.cli import main


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
    assert "model_type 'bert' (BertModel) is not supported; supported: qwen3" in only_error_line(err)


def test_non_empty_out_needs_force(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, err = run_export(capsys, tiny_checkpoint, "--out", out)
    assert code == 2
    assert "exists and is not empty; pass --force" in only_error_line(err)
    assert (out / "keep.txt").read_text() == "precious"


def test_unknown_format(capsys, tmp_path, tiny_checkpoint):
    code, err = run_export(capsys, tiny_checkpoint, "--out", tmp_path / "out",
                           "--formats", "onnx-fp32,tflite")
    assert code == 2
    assert "unknown format 'tflite'" in only_error_line(err)
    assert_nothing_written(tmp_path)


def test_base_repo_needs_a_task(capsys, tmp_path, adapter_checkpoint):
    code, err = run_export(capsys, adapter_checkpoint, "--out", tmp_path / "out")
    assert code == 2
    assert "task adapters (classification, retrieval); choose one with --task" in \
        only_error_line(err)


def test_task_without_adapter(capsys, tmp_path, adapter_checkpoint):
    code, err = run_export(capsys, adapter_checkpoint, "--out", tmp_path / "out",
                           "--task", "clustering")
    assert code == 2
    assert "has no adapter for task 'clustering'" in only_error_line(err)


def test_task_on_merged_checkpoint(capsys, tmp_path, tiny_checkpoint):
    code, err = run_export(capsys, tiny_checkpoint, "--out", tmp_path / "out",
                           "--task", "retrieval")
    assert code == 2
    assert "cannot serve task 'retrieval': omit --task" in only_error_line(err)


def test_merged_checkpoint_named_for_its_task(capsys, tmp_path, tiny_checkpoint):
    """A `...-retrieval` checkpoint accepts --task retrieval (and records it) without adapters."""
    named = tmp_path / "jina-embeddings-v5-text-small-retrieval"
    shutil.copytree(tiny_checkpoint, named)
    code, _ = run_export(capsys, named, "--out", tmp_path / "out", "--task", "retrieval",
                         "--formats", "onnx-fp32", "--probe-max-tokens", "32")
    assert code == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["source"]["task"] == \
        "retrieval"


def test_interrupted_export_leaves_no_bundle(capsys, tmp_path, tiny_checkpoint, monkeypatch):
    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline.onnx_export, "quantize_int8", disk_full)
    code, err = run_export(capsys, tiny_checkpoint, "--out", tmp_path / "out",
                           "--probe-max-tokens", "32")
    assert code == 2
    assert "No space left on device" in only_error_line(err)
    assert_nothing_written(tmp_path)


def test_parity_below_bar_fails(capsys, tmp_path, tiny_checkpoint, monkeypatch):
    strict = pipeline.FormatSpec("onnx-int8", "onnx", "int8", 0.9999999, "onnx/int8")
    monkeypatch.setitem(pipeline.FORMATS, "onnx-int8", strict)
    code, err = run_export(capsys, tiny_checkpoint, "--out", tmp_path / "out",
                           "--formats", "onnx-int8", "--probe-max-tokens", "32")
    assert code == 2
    assert "parity below bar for onnx-int8" in only_error_line(err)
    assert "BELOW BAR" in err
    assert_nothing_written(tmp_path)


def test_replacing_with_force(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, _ = run_export(capsys, tiny_checkpoint, "--out", out, "--force",
                         "--formats", "onnx-fp32", "--probe-max-tokens", "32")
    assert code == 0
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_crash_while_measuring_parity_fails_that_artifact(capsys, tmp_path, tiny_checkpoint,
                                                          crash_in_child):
    crash_in_child("gguf-q8_0")
    code, err = run_export(capsys, tiny_checkpoint, "--out", tmp_path / "out",
                           "--formats", "onnx-fp32,gguf-q8_0", "--probe-max-tokens", "32")
    assert code == 2
    assert only_error_line(err) == ("embedrpc: error: gguf-q8_0: llama.cpp crashed (SIGSEGV) on "
                                    "this host while measuring parity; bundle not written")
    assert "FAILED: crashed (SIGSEGV)" in err  # in the parity table, beside onnx-fp32's row
    assert_nothing_written(tmp_path)


def test_killed_export_leaves_nothing_the_next_one_trips_on(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    args = [tiny_checkpoint, "--out", out, "--formats", "onnx-fp32", "--probe-max-tokens", "32"]
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
