"""The OpenVINO runtime: IR artifacts written at export (NNCF static int8, bf16), served, and
batch-invariant where onnxruntime's dynamic int8 is not. Parity against sentence-transformers
is in test_export.py (every artifact of BARS)."""

from __future__ import annotations

import numpy as np
import openvino
import pytest

from embedrpc.export.calibration import calibration_documents, calibration_texts
from embedrpc.export.openvino_export import CALIBRATION_MAX_TOKENS, calibration_inputs
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.runtimes.interface import options_for, pad
from embedrpc.service.runtimes.openvino_runtime import native_bf16
from embedrpc.service.runtimes.registry import open_runtime
from embedrpc.service.runtimes.selection import Choice
from embedrpc.v1 import embedding_pb2 as pb

from server_support import LoopbackServer, vectors_of

TEXTS = ["a short query", "how do vector databases index embeddings? " * 3,
         "Ünïcödé\tand\nlines 🙂", "x " * 60]


def matrix_types(xml) -> set[str]:
    """Element types of the IR's 2-D constants (the weight matrices)."""
    model = openvino.Core().read_model(str(xml))
    return {op.get_output_element_type(0).get_type_name() for op in model.get_ops()
            if op.get_type_name() == "Constant"
            and op.get_output_partial_shape(0).rank.get_length() == 2}


def test_export_writes_int8_and_fp16_weight_ir(eos_bundle):
    manifest = Bundle(eos_bundle).manifest
    int8, bf16 = manifest.artifact("openvino-int8"), manifest.artifact("openvino-bf16")
    assert int8.path == "openvino/int8/model.xml" and bf16.path == "openvino/bf16/model.xml"
    assert {f.path for f in int8.files} == {"openvino/int8/model.xml", "openvino/int8/model.bin"}
    assert "i8" in matrix_types(eos_bundle / int8.path)  # quantised weights, not fake ones
    assert "f32" not in matrix_types(eos_bundle / bf16.path)  # weights stored in fp16
    assert int8.lossy and int8.parity.bar == 0.995 and bf16.parity.bar == 0.9999
    assert int8.parity.passed and bf16.parity.passed


def test_calibration_covers_sentences_and_long_documents(eos_bundle):
    bundle = Bundle(eos_bundle)
    manifest = bundle.manifest
    items = calibration_inputs(bundle.tokenizer(), manifest.prompts,
                               manifest.tokenizer.pad_token_id, "right")
    lengths = [item["input_ids"].shape[1] for item in items]
    assert len(items) == len(manifest.prompts) * (len(calibration_texts())
                                                  + len(calibration_documents()))
    assert max(lengths) == min(CALIBRATION_MAX_TOKENS, manifest.max_input_tokens)
    assert min(lengths) < 16 and all(item["attention_mask"].all() for item in items)


def embed(bundle, artifact, sequences, **options):
    runtime = open_runtime(bundle, artifact, options_for(bundle, **options))
    try:
        return runtime, runtime.embed_batch(sequences)
    finally:
        runtime.close()


def batch_shift(bundle, artifact, padding_side) -> float:
    """Largest change of a text's vector between running alone and in a padded batch."""
    ids = bundle.tokenizer().encode(TEXTS, bundle.manifest.prompts["document"])
    _, together = embed(bundle, artifact, ids, padding_side=padding_side)
    alone = np.vstack([embed(bundle, artifact, [s], padding_side=padding_side)[1] for s in ids])
    return float(np.max(np.abs(together - alone)))


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_static_int8_is_batch_invariant_where_dynamic_int8_is_not(eos_bundle, padding_side):
    """Why openvino-int8 may batch and onnx-int8 runs one text per pass: the same check fails
    for onnxruntime's dynamic per-tensor scales (so it can fail)."""
    bundle = Bundle(eos_bundle)
    assert open_runtime(bundle, "openvino-int8").policy.max_sequences is None
    assert batch_shift(bundle, "openvino-int8", padding_side) < 1e-5
    assert batch_shift(bundle, "openvino-bf16", padding_side) < 1e-5
    assert batch_shift(bundle, "onnx-int8", padding_side) > 1e-3


def test_bf16_is_reported_as_it_runs(eos_bundle):
    bundle = Bundle(eos_bundle)
    runtime, _ = embed(bundle, "openvino-bf16", [[1, 2, 3]])
    expected = "bf16" if native_bf16(openvino.Core()) else \
        "bf16 (run in fp32: no native bf16 on this CPU)"
    assert runtime.precision == expected


def test_pads_right_whatever_the_bundle_says(eos_bundle):
    bundle = Bundle(eos_bundle)
    runtime = open_runtime(bundle, "openvino-int8", options_for(bundle, padding_side="left"))
    ids = bundle.tokenizer().encode(TEXTS, bundle.manifest.prompts["query"])
    inputs, mask = pad(ids, bundle.manifest.tokenizer.pad_token_id, "right")
    try:
        direct = runtime._request.infer({"input_ids": inputs, "attention_mask": mask})
        np.testing.assert_allclose(runtime.embed_batch(ids), direct[runtime._output], atol=1e-6)
    finally:
        runtime.close()


def test_a_restart_loads_the_compiled_model_from_the_cache(eos_bundle, tmp_path):
    bundle = Bundle(eos_bundle)
    cache = tmp_path / "compiled"
    _, first = embed(bundle, "openvino-int8", [[1, 2, 3]], compiled_cache=str(cache))
    blobs = sorted(cache.rglob("*.blob"))
    assert blobs  # written by the first open
    stamps = [blob.stat().st_mtime_ns for blob in blobs]
    _, again = embed(bundle, "openvino-int8", [[1, 2, 3]], compiled_cache=str(cache))
    assert [blob.stat().st_mtime_ns for blob in blobs] == stamps  # read, not rewritten
    np.testing.assert_array_equal(first, again)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("x")
    _, unwritable = embed(bundle, "openvino-int8", [[1, 2, 3]], compiled_cache=str(blocked))
    np.testing.assert_array_equal(first, unwritable)


def test_served_over_grpc(eos_bundle):
    bundle = Bundle(eos_bundle)
    ids = bundle.tokenizer().encode(TEXTS, bundle.manifest.prompts["query"])
    _, expected = embed(bundle, "openvino-int8", ids)
    server = LoopbackServer(eos_bundle, choice=Choice("openvino-cpu", "openvino-int8", "test"))
    try:
        info = server.stub.GetInfo(pb.GetInfoRequest())
        response = server.stub.Embed(pb.EmbedRequest(inputs=TEXTS, task=pb.TASK_QUERY))
    finally:
        server.stop()
    assert (info.runtime, info.artifact) == ("openvino-cpu", "openvino-int8")
    np.testing.assert_allclose(vectors_of(response), expected, atol=1e-4)
