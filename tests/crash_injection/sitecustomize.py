"""A real native crash for the containment tests (never installed; tests only).

Any Python process started with this directory on PYTHONPATH and EMBEDRPC_TEST_CRASH naming an
artifact (e.g. "gguf-q8_0") dies of a genuine SIGSEGV, a NULL read through ctypes, the moment a
runtime over that artifact embeds its first batch (or, with EMBEDRPC_TEST_CRASH_AT=open, opens
it): what a host-specific kernel bug looks like to embedrpc (llama.cpp's AMX matmul, upstream
llama.cpp#20824).
"""

import os

_TARGET = os.environ.get("EMBEDRPC_TEST_CRASH")

if _TARGET:
    import ctypes

    from embedrpc.service.bundle import Bundle

    _open_runtime = Bundle.open_runtime

    def _open_crashing_runtime(self, artifact_name, *args, **kwargs):
        if artifact_name == _TARGET and os.environ.get("EMBEDRPC_TEST_CRASH_AT") == "open":
            ctypes.string_at(0)
        runtime = _open_runtime(self, artifact_name, *args, **kwargs)
        if artifact_name == _TARGET:
            runtime.embed_batch = lambda sequences: ctypes.string_at(0)
        return runtime

    Bundle.open_runtime = _open_crashing_runtime
