"""This host's attainable GEMM peak and the model's FLOPs per token: a tokens/s ceiling.

The peaks are measured with onnxruntime's own kernels (MLAS: MatMul for fp32, MatMulInteger for
int8) and, for bf16, with OpenVINO's (oneDNN, the kernels its bf16 precision runs: AVX-512 BF16
or AMX where the CPU has them), on matrices shaped like the model's projections, with the same
threads.
"""

from __future__ import annotations

import time

import numpy as np


def flops_per_token(config: dict, context_tokens: int) -> float:
    """Multiply-adds x2 of the transformer per token: projections, MLP and attention."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, inner = config["head_dim"], config["intermediate_size"]
    projections = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q, o + k, v
    mlp = 3 * hidden * inner
    attention = 2 * context_tokens * heads * head_dim  # QK^T and AV, per query token
    return 2.0 * layers * (projections + mlp + attention)


def _matmul_model(kind: str, m: int, k: int, n: int):
    from onnx import TensorProto, helper

    if kind == "fp32":
        inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
                  helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])]
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        output = helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])
    else:
        inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k]),
                  helper.make_tensor_value_info("b", TensorProto.INT8, [k, n])]
        node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
        output = helper.make_tensor_value_info("c", TensorProto.INT32, [m, n])
    graph = helper.make_graph([node], "gemm", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def gemm_peak(kind: str, threads: int = 0, m: int = 512, k: int = 1024, n: int = 3072,
              seconds: float = 2.0) -> float:
    """Attainable GFLOP/s (int8: GOP/s) of one onnxruntime GEMM kernel on this host."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(_matmul_model(kind, m, k, n).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    if kind == "fp32":
        feeds = {"a": rng.standard_normal((m, k), dtype=np.float32),
                 "b": rng.standard_normal((k, n), dtype=np.float32)}
    else:
        feeds = {"a": rng.integers(0, 255, (m, k), dtype=np.uint8),
                 "b": rng.integers(-127, 127, (k, n), dtype=np.int8)}
    session.run(None, feeds)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, feeds)
        runs += 1
    return 2.0 * m * k * n * runs / (time.perf_counter() - started) / 1e9


def bf16_peak(threads: int = 0, m: int = 512, k: int = 1024, n: int = 3072,
              seconds: float = 2.0) -> float | None:
    """Attainable GFLOP/s of OpenVINO's bf16 GEMM on this host; None without native bf16."""
    try:
        import openvino
        import openvino.opset13 as ops
    except ImportError:
        return None
    core = openvino.Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return None
    rng = np.random.default_rng(0)
    a = ops.parameter([m, k], openvino.Type.f32, name="a")
    b = ops.constant(rng.standard_normal((k, n), dtype=np.float32))
    model = openvino.Model([ops.matmul(a, b, False, False)], [a], "gemm")
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = core.compile_model(model, "CPU", config).create_infer_request()
    feed = {"a": rng.standard_normal((m, k), dtype=np.float32)}
    request.infer(feed)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        request.infer(feed)
        runs += 1
    return 2.0 * m * k * n * runs / (time.perf_counter() - started) / 1e9


def ceilings(config: dict, mean_length: float, threads: int) -> dict:
    """This host's GEMM rates and the tokens/s ceilings they give the model at a workload's
    mean text length (a token's mean context is half of it)."""
    flops = flops_per_token(config, int(mean_length / 2))
    fp32, int8 = gemm_peak("fp32", threads), gemm_peak("int8", threads)
    bf16 = bf16_peak(threads)
    return {"fp32_gflops": fp32, "int8_gops": int8, "gflop_per_token": flops / 1e9,
            "fp32_tokens_per_s": fp32 * 1e9 / flops, "int8_tokens_per_s": int8 * 1e9 / flops,
            "bf16_gflops": bf16, "bf16_tokens_per_s": bf16 * 1e9 / flops if bf16 else None}
