"""A runtime that is not part of embedrpc: what adding one takes (tests/test_declarations.py).

The whole declaration is this file; registering it is one line (appending SPEC to
`embedrpc.service.runtimes.registry.SPECS`). It serves the ONNX fp32 artifact with onnxruntime
under its own name and one setting of its own.
"""

from __future__ import annotations

from embedrpc.service.bundle import formats
from embedrpc.service.runtimes.interface import RuntimeSpec, Setting, Tier
from embedrpc.service.runtimes.onnx_runtime import OnnxRuntime

NAME = "onnx-reference"
NOTE = Setting("reference_note", "none", "a setting only this runtime has",
               choices=("none", "loud"))


def _open(bundle, artifact, options):
    runtime = OnnxRuntime(bundle.path_of(artifact), artifact=artifact.name,
                          precision=artifact.precision,
                          pad_token_id=bundle.manifest.tokenizer.pad_token_id, options=options)
    runtime.name = NAME
    runtime.note = options.setting(NOTE)
    return runtime


SPEC = RuntimeSpec(NAME, Tier.CPU, "onnxruntime (reference)", (formats.ONNX_FP32,),
                   ("onnxruntime",), lambda: (True, "onnxruntime is installed"), _open,
                   settings=(NOTE,))
