"""One table, three ways: printed, JSON + Markdown in benchmarks/results/, and a PNG chart."""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict
from pathlib import Path

from benchmarks.engines import Result
from embedrpc.service.runtimes import hostinfo

TORCH_BASELINE = "sentence-transformers torch fp32"


def machine() -> dict:
    cpu = hostinfo.cpu()
    memory = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()) \
        if Path("/proc/meminfo").exists() else None
    versions = {}
    for package in ("onnxruntime", "openvino", "llama_cpp", "torch", "sentence_transformers",
                    "grpc"):
        try:
            versions[package] = __import__(package).__version__
        except Exception:  # a peer that is not installed
            versions[package] = "not installed"
    return {"cpu": f"{cpu.model}, {cpu.family_model}" if cpu.family_model else cpu.model,
            "cores": os.cpu_count(),
            "memory_gb": round(int(memory.group(1)) / 1e6, 1) if memory else None,
            "isa": cpu.simd_flags,
            "amx": cpu.has_amx, "python": platform.python_version(), "versions": versions}


def host_slug(cpu_model: str) -> str:
    """A file-name tag for a CPU kind: 'amd-epyc', 'intel-xeon', ..."""
    words = re.findall(r"[a-z0-9]+", cpu_model.lower().replace("(r)", "").replace("(tm)", ""))
    return "-".join(words[:2]) or "unknown-cpu"


def write_focused(out_dir: Path, name: str, text: str) -> Path:
    """A focused measurement's table as results/<name>-<cpu kind>.md, printed too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{host_slug(hostinfo.cpu().model)}.md"
    path.write_text(text)
    print(text)
    return path


def auto_line(auto: str, results: list[Result]) -> str:
    """Whether the self-check's pick is the fastest runtime served over gRPC in this run."""
    served = [r for r in results if r.mode == "served" and "HTTP" not in r.engine]
    if not served:
        return f"`--runtime auto` picks {auto}; no runtime was served in this run."
    fastest = max(served, key=lambda r: r.tokens_per_s)
    picked = next((r for r in served if r.engine == f"embedrpc {auto}"), None)
    if picked is None:
        verdict = "not among the runtimes served in this run"
    elif picked is fastest:
        verdict = "the fastest served here: they agree"
    else:
        verdict = (f"served at {picked.tokens_per_s:.0f} tokens/s, "
                   f"{picked.tokens_per_s / fastest.tokens_per_s:.2f}× the fastest: they disagree")
    return (f"`--runtime auto` picks {auto} on this host; the fastest served over gRPC here is "
            f"{fastest.engine.removeprefix('embedrpc ')} ({fastest.tokens_per_s:.0f} tokens/s); "
            f"the pick is {verdict}.")


def ceiling_for(result: Result, limits: dict) -> float | None:
    """The tokens/s ceiling that applies: int8 engines against the int8 GEMM peak, bf16 ones
    against the bf16 peak (None where the host has no native bf16), the rest against fp32."""
    if any(tag in result.engine for tag in ("int8", "q8_0", "q4_k")):
        return limits["int8_tokens_per_s"]
    if "bf16" in result.engine:
        return limits.get("bf16_tokens_per_s")
    return limits["fp32_tokens_per_s"]


def rows(results: list[Result], limits: dict) -> list[dict]:
    baseline = next((r.tokens_per_s for r in results if r.engine == TORCH_BASELINE), None)
    raw = {r.engine: r.tokens_per_s for r in results if r.mode == "raw"}
    out = []
    for r in results:
        ceiling = ceiling_for(r, limits)
        raw_rate = next((rate for engine, rate in raw.items()
                         if r.engine == engine or r.engine.startswith(engine + " ")), None)
        out.append({
            "engine": r.engine, "mode": r.mode, "tokens_per_s": r.tokens_per_s,
            "texts_per_s": r.texts_per_s,
            "vs_torch_fp32": r.tokens_per_s / baseline if baseline else None,
            "of_limit": r.tokens_per_s / ceiling if ceiling else None,
            "served_vs_raw": r.tokens_per_s / raw_rate
            if r.mode == "served" and raw_rate else None,
            **{k: r.latency_ms.get(k) for k in ("p50", "p95", "p99")},
            "peak_rss_mb": r.peak_rss_mb, "cold_start_s": r.cold_start_s,
            "worker_rss_mb": r.worker_rss_mb,
            "rss_vs_artifact": r.worker_rss_mb / r.artifact_mb
            if r.worker_rss_mb and r.artifact_mb else None,
            "min_cosine": r.min_cosine, "note": r.note})
    return out


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(table: list[dict], limits: dict, host: dict, settings: dict,
             unavailable: list[str]) -> str:
    lines = [
        "| engine | mode | tokens/s | texts/s | × torch fp32 | of limit | served/raw "
        "| min cos vs fp32 | p50 ms | p95 ms | p99 ms | peak RSS MiB (server + worker) "
        "| worker RSS / artifact | cold start s | note |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for row in table:
        lines.append(
            f"| {row['engine']} | {row['mode']} | {row['tokens_per_s']:.0f} | "
            f"{row['texts_per_s']:.2f} | {_fmt(row['vs_torch_fp32'], '.2f')} | "
            f"{_fmt(row['of_limit'], '.0%')} | {_fmt(row['served_vs_raw'], '.2f')} | "
            f"{_fmt(row.get('min_cosine'), '.5f')} | "
            f"{_fmt(row['p50'], '.0f')} | {_fmt(row['p95'], '.0f')} | {_fmt(row['p99'], '.0f')} | "
            f"{_fmt(row['peak_rss_mb'], '.0f')} | {_fmt(row.get('rss_vs_artifact'), '.2f')} | "
            f"{_fmt(row['cold_start_s'], '.1f')} | {row['note']} |")
    lines += [
        "",
        f"**Limit** (this host, onnxruntime's GEMM kernels, {settings['threads']} threads): "
        f"fp32 {limits['fp32_gflops']:.0f} GFLOP/s, int8 {limits['int8_gops']:.0f} GOP/s; "
        + (f"OpenVINO's bf16 GEMM {limits['bf16_gflops']:.0f} GFLOP/s; "
           if limits.get("bf16_gflops") else "no native bf16; ")
        + f"the model needs {limits['gflop_per_token']:.2f} GFLOP per token at the workload's "
        f"mean length, so the ceilings are {limits['fp32_tokens_per_s']:.0f} tokens/s (fp32), "
        f"{limits['int8_tokens_per_s']:.0f} tokens/s (int8)"
        + (f" and {limits['bf16_tokens_per_s']:.0f} tokens/s (bf16)"
           if limits.get("bf16_tokens_per_s") else "")
        + ". Int8 and Q8_0/Q4_K engines are compared with the int8 ceiling, bf16 ones with the "
        "bf16 ceiling, the others with fp32.",
        "",
        f"**Workload** (seed {settings['seed']}): {settings['workload']}; "
        f"{settings['tokens']} tokens in all. Latency: {settings['latency_queries']} single "
        f"short queries, one at a time, after the throughput run.",
        "",
        f"**Self-check vs the benchmark**: {settings['auto']}" if settings.get("auto") else "",
        "",
        f"**Machine**: {host['cpu']}, {host['cores']} cores, {host['memory_gb']} GB; "
        f"ISA: {', '.join(host['isa']) or 'baseline'}; "
        f"AMX {'present' if host.get('amx') else 'absent'}; "
        f"Python {host['python']}; "
        + ", ".join(f"{k} {v}" for k, v in host["versions"].items()) + ".",
    ]
    if unavailable:
        lines += ["", "**Peers that could not run here**: " + "; ".join(unavailable) + "."]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, name: str, table: list[dict], limits: dict, host: dict,
          settings: dict, unavailable: list[str], results: list[Result]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(table, limits, host, settings, unavailable)
    (out_dir / f"{name}.md").write_text(f"# embedrpc benchmark: {name}\n\n" + text)
    (out_dir / f"{name}.json").write_text(json.dumps(
        {"machine": host, "settings": settings, "limits": limits, "table": table,
         "results": [asdict(r) for r in results], "unavailable": unavailable}, indent=1))
    _chart(out_dir / f"{name}.png", table, limits)
    return out_dir / f"{name}.md"


def _chart(path: Path, table: list[dict], limits: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels = [f"{r['engine']} ({r['mode']})" for r in table]
    values = [r["tokens_per_s"] for r in table]
    figure, axis = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.5))
    axis.barh(labels, values, color=["#4c72b0" if r["mode"] != "peer" else "#999999"
                                     for r in table])
    for name, key, style in (("fp32 limit", "fp32_tokens_per_s", "--"),
                             ("int8 limit", "int8_tokens_per_s", ":")):
        axis.axvline(limits[key], color="#c44e52", linestyle=style, label=name)
    axis.set_xlabel("tokens/s (higher is better)")
    axis.invert_yaxis()
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
