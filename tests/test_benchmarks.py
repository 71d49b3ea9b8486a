"""The benchmark harness's own arithmetic and determinism (not speed: that is benchmarks/)."""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks import limit, report
from benchmarks.engines import Result, isolated
from benchmarks.workload import make_workload
from fixtures.random_checkpoint import qwen3_config


def test_flops_per_token_counts_every_projection():
    """2 FLOPs per weight of every Linear in a real Qwen3-0.6B-shape model, plus attention."""
    from transformers import Qwen3Model

    config = qwen3_config("qwen3-0.6b", 32768)
    with torch.device("meta"):
        model = Qwen3Model(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 2 * 100 * config.num_attention_heads * config.head_dim * config.num_hidden_layers
    expected = 2 * (linear + attention)
    assert limit.flops_per_token(config.to_dict(), 100) == expected
    assert round(linear / 1e6) == 440  # 596M total less the 155M-row embedding table


def test_workload_is_seeded_and_mixed():
    count = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    first = make_workload(count, 10, 4, 2, seed=3)
    assert first == make_workload(count, 10, 4, 2, seed=3)
    assert first != make_workload(count, 10, 4, 2, seed=4)
    kinds = [t.kind for t in first]
    assert (kinds.count("query"), kinds.count("doc128"), kinds.count("doc512")) == (10, 4, 2)
    assert all(count(t.text) >= 512 for t in first if t.kind == "doc512")
    assert kinds != sorted(kinds)  # shuffled together


def test_table_ratios():
    results = [Result("sentence-transformers torch fp32", "peer", 1000, 10.0, 10),
               Result("embedrpc onnx-cpu onnx-int8", "raw", 1000, 2.0, 10),
               Result("embedrpc onnx-cpu onnx-int8", "served", 1000, 2.5, 10,
                      {"p50": 20.0, "p95": 30.0, "p99": 40.0}, 900.0, 1.5, worker_rss_mb=600.0,
                      artifact_mb=400.0, min_cosine=0.9975)]
    limits = {"fp32_tokens_per_s": 200.0, "int8_tokens_per_s": 1000.0, "fp32_gflops": 100.0,
              "int8_gops": 500.0, "gflop_per_token": 0.5}
    table = report.rows(results, limits)
    served = table[2]
    assert served["vs_torch_fp32"] == 4.0 and served["served_vs_raw"] == 0.8
    assert served["of_limit"] == 0.4 and table[0]["of_limit"] == 0.5
    assert served["rss_vs_artifact"] == 1.5 and table[1]["rss_vs_artifact"] is None
    text = report.markdown(table, limits, {"cpu": "x", "cores": 2, "memory_gb": 1, "isa": [],
                                           "python": "3", "versions": {}},
                           {"threads": 2, "seed": 1, "workload": "w", "tokens": 1000,
                            "latency_queries": 3}, ["Infinity: not here"])
    assert "| embedrpc onnx-cpu onnx-int8 | served | 400 | 4.00 | 4.00 | 40% | 0.80 | 0.99750 | " \
        "20 | 30 | 40 | 900 | 1.50 | 1.5 |" in text
    assert "Infinity: not here" in text


def test_auto_line_says_whether_the_self_check_picked_the_fastest_served_runtime():
    results = [Result("embedrpc onnx-cpu onnx-int8", "served", 1000, 2.0, 10),
               Result("embedrpc openvino-cpu openvino-int8", "served", 1000, 1.0, 10),
               Result("embedrpc openvino-cpu openvino-int8 HTTP base64", "served", 1000, 0.5, 10)]
    agree = report.auto_line("openvino-cpu openvino-int8", results)
    assert "fastest served over gRPC here is openvino-cpu openvino-int8 (1000 tokens/s)" in agree
    assert "they agree" in agree
    disagree = report.auto_line("onnx-cpu onnx-int8", results)
    assert "500 tokens/s, 0.50× the fastest: they disagree" in disagree
    assert "not among" in report.auto_line("llamacpp gguf-q8_0", results)


def test_a_peer_runs_isolated_so_its_crash_costs_its_row_not_the_run():
    assert isolated(sum, [1, 2, 3]) == 6
    with pytest.raises(RuntimeError, match="ValueError: invalid literal"):
        isolated(int, "not a number")
    with pytest.raises(RuntimeError, match=r"crashed \(SIGABRT\)"):
        isolated(os.abort)


def test_openvino_sweep_batches_as_the_scheduler_does():
    """The sweep's plan for clients keeping one text each in flight: every text once, each
    batch formed from what those clients have sent; as many clients as texts: the whole
    queue's plan."""
    from benchmarks.openvino_settings import served_plan
    from embedrpc.service.runtimes.batching import BatchPolicy, plan_batches

    policy = BatchPolicy(64, max_padding_ratio=1.25)
    lengths = [10, 30, 11, 9, 31, 12, 40, 10, 29, 8]
    batches = served_plan(lengths, policy, clients=3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches[:2] == [[0, 2], [1, 4]]  # 1 waits for a text of its length to be sent
    assert all(max(batch) < 3 + sum(map(len, batches[:n]))
               for n, batch in enumerate(batches))  # never a text its client has not sent
    assert served_plan(lengths, policy, clients=len(lengths)) == plan_batches(lengths, policy)
