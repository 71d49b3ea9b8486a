"""Reading a GGUF's metadata the way llama.cpp does (its own loader, vocabulary only): what the
runtime will see, in a fraction of the time Python's GGUFReader takes over a 151k-token
vocabulary."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp

from embedrpc.service.runtimes.llamacpp_runtime import quiet_logs

_VALUE_BYTES = 4096


def gguf_metadata(path: Path) -> dict[str, str]:
    """Every scalar metadata value of the GGUF at `path`, as llama.cpp prints it."""
    quiet_logs(llama_cpp)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp cannot load {path}"
    try:
        buffer = ctypes.create_string_buffer(_VALUE_BYTES)
        found = {}
        for index in range(llama_cpp.llama_model_meta_count(model)):
            llama_cpp.llama_model_meta_key_by_index(model, index, buffer, _VALUE_BYTES)
            key = buffer.value.decode()
            llama_cpp.llama_model_meta_val_str_by_index(model, index, buffer, _VALUE_BYTES)
            found[key] = buffer.value.decode("utf-8", "replace")
        return found
    finally:
        llama_cpp.llama_model_free(model)
