"""Run inside a side environment with `sentence-transformers[openvino,onnx]` (not embedrpc's):
sentence-transformers' own ONNX and OpenVINO backends on the benchmark's texts.

    python st_backends_run.py CHECKPOINT WORK_DIR TEXTS_JSON BACKEND

BACKEND: `openvino` (its default export and precision), `openvino-static-int8` (that export,
then `export_static_quantized_openvino_model`: NNCF post-training int8, calibrated on the
texts file's `calibration` sentences instead of the hub dataset it loads by default) or
`onnx-int8` (its ONNX export, then `export_dynamic_quantized_onnx_model` with the avx512_vnni
config). Prints one JSON line.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path


def with_position_ids(model) -> None:
    """optimum's decoder exports take `position_ids`, which sentence-transformers does not
    feed: add them (the padding-aware positions transformers computes) to every batch."""
    transformer = model[0]
    for name in ("preprocess", "tokenize"):  # sentence-transformers 5.x, 3.x-4.x
        if hasattr(transformer, name):
            setattr(transformer, name, _adding_positions(getattr(transformer, name)))
    if hasattr(transformer, "model_forward_params"):  # the inputs it passes on to the model
        transformer.model_forward_params = {*transformer.model_forward_params, "position_ids"}


def _adding_positions(tokenize):
    def tokenize_with_positions(*args, **kwargs):
        features = tokenize(*args, **kwargs)
        if "attention_mask" in features:
            mask = features["attention_mask"]
            features["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        return features

    return tokenize_with_positions


def static_int8(checkpoint: str, work_dir: Path, sentences: list[str]):
    """sentence-transformers' static int8 OpenVINO export as its docs show it, with its
    calibration dataset built from local sentences (its default downloads glue/sst2)."""
    from datasets import Dataset
    from optimum.intel.openvino import OVQuantizer
    from sentence_transformers import SentenceTransformer, export_static_quantized_openvino_model

    def local_calibration(self, dataset_name, *, preprocess_function, num_samples=300,
                          **_ignored):
        rows = Dataset.from_dict({"sentence": sentences[:num_samples]})
        prepared = rows.map(lambda batch: _with_positions(preprocess_function(batch)),
                            batched=True, remove_columns=["sentence"])
        print(f"calibrating on {len(prepared)} local sentences instead of {dataset_name}",
              file=sys.stderr)
        return prepared

    OVQuantizer.get_calibration_dataset = local_calibration
    exported = SentenceTransformer(checkpoint, backend="openvino", device="cpu")
    exported.save(str(work_dir))
    export_static_quantized_openvino_model(exported, None, str(work_dir))
    return SentenceTransformer(str(work_dir), backend="openvino", device="cpu", model_kwargs={
        "file_name": "openvino/openvino_model_qint8_quantized.xml"})


def _with_positions(features):
    """The positions transformers derives from the padding mask (optimum's export takes them)."""
    from itertools import accumulate

    features["position_ids"] = [[max(total - 1, 0) for total in accumulate(row)]
                                for row in features["attention_mask"]]
    return features


def main() -> None:
    checkpoint, work, texts_file, backend = sys.argv[1:5]
    from sentence_transformers import SentenceTransformer, __version__

    items = json.loads(Path(texts_file).read_text())
    work_dir = Path(work) / backend
    shutil.rmtree(work_dir, ignore_errors=True)
    started = time.perf_counter()
    if backend == "openvino":
        model = SentenceTransformer(checkpoint, backend="openvino", device="cpu")
    elif backend == "openvino-static-int8":
        model = static_int8(checkpoint, work_dir, items["calibration"])
    else:
        from sentence_transformers import export_dynamic_quantized_onnx_model

        exported = SentenceTransformer(checkpoint, backend="onnx", device="cpu")
        exported.save(str(work_dir))
        export_dynamic_quantized_onnx_model(exported, "avx512_vnni", str(work_dir))
        model = SentenceTransformer(str(work_dir), backend="onnx", device="cpu", model_kwargs={
            "file_name": "onnx/model_qint8_avx512_vnni.onnx"})
    with_position_ids(model)
    prepared = time.perf_counter() - started
    model.max_seq_length = max(model.max_seq_length or 0, 1024)
    texts = items["prompted"]
    model.encode(texts[:2], prompt="")
    began = time.perf_counter()
    vectors = model.encode(texts, prompt="", batch_size=32)
    elapsed = time.perf_counter() - began
    latency = []
    for query in items["queries"]:
        sent = time.perf_counter()
        model.encode(["Query: " + query], prompt="")
        latency.append(time.perf_counter() - sent)
    with open("/proc/self/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(json.dumps({"seconds": elapsed, "vectors": vectors.tolist(), "latency": latency,
                      "prepare_s": prepared, "rss_kb": rss_kb, "version": __version__}))


if __name__ == "__main__":
    main()
