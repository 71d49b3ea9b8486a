"""Real faults for the containment tests (never installed; tests only).

Any Python process started with this directory on PYTHONPATH and EMBEDRPC_TEST_CRASH naming an
artifact (e.g. "gguf-q8_0") meets a genuine fault in a runtime over that artifact, chosen by
EMBEDRPC_TEST_CRASH_AT:

- `embed` (default): a SIGSEGV, a NULL read through ctypes, at its first batch: what a
  host-specific kernel bug looks like to embedrpc (llama.cpp's AMX matmul, llama.cpp#20824);
- `open`: the same SIGSEGV while the runtime opens;
- `slow-open`: opening takes EMBEDRPC_TEST_SLOW_S seconds (a worker that starts slowly);
- `hang-long`: a batch holding a sequence of 16 tokens or more never returns (a hung kernel;
  the file EMBEDRPC_TEST_HANG_MARK is created when it starts hanging), shorter ones are served.
"""

import os

_TARGET = os.environ.get("EMBEDRPC_TEST_CRASH")
HANG_TOKENS = 16

if _TARGET:
    import ctypes
    import time

    from embedrpc.service.runtimes import registry

    _open_runtime = registry.open_runtime
    _AT = os.environ.get("EMBEDRPC_TEST_CRASH_AT", "embed")

    def _hang_on_long(embed_batch):
        def embed(sequences, task=None):
            if max(map(len, sequences)) >= HANG_TOKENS:
                open(os.environ["EMBEDRPC_TEST_HANG_MARK"], "w").close()
                time.sleep(3600)
            return embed_batch(sequences, task)
        return embed

    def _open_faulty_runtime(bundle, artifact_name, *args, **kwargs):
        if artifact_name != _TARGET:
            return _open_runtime(bundle, artifact_name, *args, **kwargs)
        if _AT == "open":
            ctypes.string_at(0)
        if _AT == "slow-open":
            time.sleep(float(os.environ["EMBEDRPC_TEST_SLOW_S"]))
        runtime = _open_runtime(bundle, artifact_name, *args, **kwargs)
        if _AT == "embed":
            runtime.embed_batch = lambda sequences, task=None: ctypes.string_at(0)
        elif _AT == "hang-long":
            runtime.embed_batch = _hang_on_long(runtime.embed_batch)
        return runtime

    registry.open_runtime = _open_faulty_runtime
