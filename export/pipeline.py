"""`embedrpc export`: checkpoint -> bundle (artifacts, tokenizer, manifest, parity report)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from embedrpc.export import gguf_export, onnx_export
from embedrpc.export.checkpoint import Checkpoint, ExportError, choose_task, load_model, resolve
from embedrpc.export.calibration import CORPUS_NAME, calibration_texts
from embedrpc.export.oracle import (Probe, build_oracle, make_probes, oracle_embeddings,
                                    probes_to_json)
from embedrpc.export.random_checkpoint import JINA_PROMPTS
from embedrpc.export.staging import Staging, check_destination
from embedrpc.service import __version__
from embedrpc.service.bundle import Bundle
from embedrpc.service.encoding import compute_ranges
from embedrpc.service.manifest import (Artifact, FileEntry, Manifest, Parity, Source,
                                       TokenizerInfo)
from embedrpc.service.tokenization import BundleTokenizer
from embedrpc.service.validate import (ORACLE_FILE, PROBES_FILE, ParityResult, failure_line,
                                       format_report, measure, probe_token_ids)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja")
ST_FILES = ("config_sentence_transformers.json", "sentence_bert_config.json")
DEFAULT_PROBE_MAX_TOKENS = 512


@dataclass(frozen=True)
class FormatSpec:
    name: str
    format: str
    precision: str
    bar: float  # minimum cosine vs the oracle over the probe set
    directory: str

    @property
    def lossy(self) -> bool:
        return self.bar < 0.999


FORMATS = {spec.name: spec for spec in [
    FormatSpec("onnx-fp32", "onnx", "fp32", 0.99999, "onnx/fp32"),
    FormatSpec("onnx-fp16", "onnx", "fp16", 0.9999, "onnx/fp16"),
    FormatSpec("onnx-int8", "onnx", "int8", 0.995, "onnx/int8"),
    FormatSpec("gguf-f16", "gguf", "f16", 0.9999, "gguf"),
    FormatSpec("gguf-bf16", "gguf", "bf16", 0.9999, "gguf"),
    FormatSpec("gguf-q8_0", "gguf", "q8_0", 0.995, "gguf"),
    FormatSpec("gguf-q4_k_m", "gguf", "q4_k_m", 0.95, "gguf"),
]}
FORMAT_GROUPS = {group: [n for n in FORMATS if n.startswith(group + "-")]
                 for group in ("onnx", "gguf")}
DEFAULT_FORMATS = list(FORMATS)


def parse_formats(text: str | None) -> list[str]:
    """Comma-separated format names or groups, checked, in canonical order."""
    if not text:
        return list(DEFAULT_FORMATS)
    chosen: set[str] = set()
    for item in (part.strip().lower() for part in text.split(",")):
        if item in FORMATS:
            chosen.add(item)
        elif item in FORMAT_GROUPS or item == "all":
            chosen.update(FORMAT_GROUPS.get(item, FORMATS))
        else:
            raise ExportError(f"unknown format {item!r}; choose from "
                              f"{', '.join([*FORMATS, *FORMAT_GROUPS, 'all'])}")
    return [name for name in FORMATS if name in chosen]


class Progress:
    """One line per step on stderr, with the time the step took."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.started = time.monotonic()

    def step(self, message: str, action: Callable):
        began = time.monotonic()
        print(f"[export] {message} ...", file=self.stream, flush=True)
        result = action()
        print(f"[export] {message}: done in {time.monotonic() - began:.1f}s", file=self.stream,
              flush=True)
        return result

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def export_bundle(model: str, out: Path, *, revision: str | None = None, task: str | None = None,
                  formats: str | None = None, force: bool = False,
                  probe_max_tokens: int = DEFAULT_PROBE_MAX_TOKENS,
                  progress: Progress | None = None) -> Manifest:
    progress = progress or Progress()
    names = parse_formats(formats)
    check_destination(Path(out), force)  # fail before any download
    checkpoint = progress.step(f"resolving {model}", lambda: resolve(model, revision))
    task = choose_task(checkpoint, task)
    torch_model = progress.step(f"loading {checkpoint.path}" + (f" + {task} adapter"
                                if task in checkpoint.tasks_available else ""),
                                lambda: load_model(checkpoint, task))
    with Staging(Path(out), force) as staging:
        root = staging.path
        oracle_dir = _oracle_checkpoint(checkpoint, task, torch_model, staging)
        manifest = _base_manifest(checkpoint, task, torch_model.config, root)
        tokenizer = Bundle(root, manifest).tokenizer()
        manifest.parity_probe["max_tokens"] = min(probe_max_tokens, manifest.max_input_tokens)
        progress.step("computing sentence-transformers oracle and calibration vectors",
                      lambda: _write_oracle(root, manifest, tokenizer, oracle_dir))
        bundle = Bundle(root, manifest)
        probes = probe_token_ids(bundle)  # once, for every artifact
        builder = ArtifactBuilder(torch_model, manifest, root, staging, names, progress)
        results = []
        for name in names:
            spec = FORMATS[name]
            files = progress.step(f"writing {name}", lambda: builder.build(spec))
            artifact = _record(spec, files, root)
            manifest.artifacts.append(artifact)
            manifest.write(root)  # what the measuring child reads; rewritten complete below
            result = progress.step(f"measuring parity of {name}", lambda: measure(
                bundle, name, spec.bar, sequences=probes))
            artifact.parity = Parity(result.min_cosine, result.mean_cosine, result.max_abs_diff,
                                     spec.bar, result.passed)
            results.append(result)
        report = format_report(results)
        (root / "parity" / "report.txt").write_text(report + "\n")
        print(report, file=sys.stderr)
        _raise_for_failures(bundle, results)
        manifest.write(root)
        staging.publish()
    print(f"[export] bundle written to {out} in {progress.elapsed:.1f}s", file=sys.stderr)
    return manifest


def _raise_for_failures(bundle: Bundle, results: list[ParityResult]) -> None:
    """One line naming every artifact that crashed, failed or missed its bar."""
    problems = [failure_line(bundle, r, "measuring parity") for r in results if r.failure]
    below = [r.artifact for r in results if not r.failure and not r.passed]
    if below:
        problems.append(f"parity below bar for {', '.join(below)} (see the table above)")
    if problems:
        raise ExportError("; ".join(problems) + "; bundle not written")


class ArtifactBuilder:
    """Builds each artifact from the model or from intermediates made once on first need
    (the ONNX fp32 graph for fp16/int8, the F16 GGUF for llama.cpp's quantiser). An
    intermediate is written where its artifact belongs when that artifact is requested,
    else to scratch space."""

    def __init__(self, torch_model, manifest: Manifest, root: Path, staging: Staging,
                 requested: list[str], progress: Progress):
        self.model, self.manifest, self.root = torch_model, manifest, root
        self.staging, self.requested, self.progress = staging, requested, progress
        self._onnx_fp32: list[Path] | None = None
        self._gguf_f16: Path | None = None

    def build(self, spec: FormatSpec) -> list[Path]:
        out_dir = self.root / spec.directory
        if spec.format == "onnx":
            if spec.precision == "fp32":
                return self.onnx_fp32()
            source = next(p for p in self.onnx_fp32() if p.name == "model.onnx")
            convert = onnx_export.convert_fp16 if spec.precision == "fp16" \
                else onnx_export.quantize_int8
            return convert(source, out_dir)
        if spec.precision == "f16":
            return [self.gguf_f16()]
        target = out_dir / f"model-{spec.precision}.gguf"
        if spec.precision in gguf_export.WRITTEN_TYPES:
            return self._write_gguf(target, spec.precision)
        return gguf_export.quantize(self.gguf_f16(), target, spec.precision)

    def _home(self, name: str) -> Path:
        return self.root / FORMATS[name].directory if name in self.requested \
            else self.staging.work_dir(name)

    def onnx_fp32(self) -> list[Path]:
        if self._onnx_fp32 is None:
            self._onnx_fp32 = self.progress.step("exporting ONNX fp32", lambda: (
                onnx_export.export_fp32(self.model, self._home("onnx-fp32"))))
        return self._onnx_fp32

    def gguf_f16(self) -> Path:
        if self._gguf_f16 is None:
            self._gguf_f16 = self._write_gguf(self._home("gguf-f16") / "model-f16.gguf", "f16")[0]
        return self._gguf_f16

    def _write_gguf(self, target: Path, precision: str) -> list[Path]:
        manifest = self.manifest
        return gguf_export.write_gguf(
            self.model, self.root / "tokenizer.json", target, precision,
            name=Path(manifest.source.model).name, eos_token_id=manifest.tokenizer.eos_token_id,
            pad_token_id=manifest.tokenizer.pad_token_id, context_length=manifest.max_input_tokens)


def _record(spec: FormatSpec, files: list[Path], root: Path) -> Artifact:
    relative = [p.relative_to(root).as_posix() for p in files]
    main = next(r for r in relative if r.endswith((".onnx", ".gguf")))
    return Artifact(spec.name, spec.format, spec.precision, main,
                    [FileEntry.of(root, r) for r in relative], lossy=spec.lossy)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _base_manifest(checkpoint: Checkpoint, task: str | None, config, root: Path) -> Manifest:
    source = checkpoint.path
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copy2(source / name, root / name)
    if "tokenizer.json" not in copied:
        _save_fast_tokenizer(source, root)
        copied.insert(0, "tokenizer.json")
    st_config = _read_json(source / "config_sentence_transformers.json")
    max_tokens = _max_input_tokens(source, config)
    tokenizer_config = _read_json(source / "tokenizer_config.json")
    tokenizer = BundleTokenizer.from_file(root / "tokenizer.json", max_tokens)
    hidden = int(config.hidden_size)
    dims = getattr(config, "matryoshka_dimensions", None) or \
        [d for d in (32, 64, 128, 256, 512, 768, 1024) if d < hidden] + [hidden]
    return Manifest(
        source=Source(checkpoint.model, checkpoint.revision, checkpoint.content_sha256(), task),
        architecture=config.model_type, hidden_size=hidden,
        matryoshka_dims=sorted(int(d) for d in dims if int(d) <= hidden),
        max_input_tokens=max_tokens,
        prompts=st_config.get("prompts") or dict(JINA_PROMPTS),
        default_prompt_name=st_config.get("default_prompt_name") or "document",
        tokenizer=TokenizerInfo(
            files=[FileEntry.of(root, name) for name in copied],
            appends_eos=tokenizer.appends_eos,
            eos_token_id=(tokenizer.special.suffix[-1] if tokenizer.appends_eos
                          else _token_id(tokenizer, tokenizer_config.get("eos_token"))),
            pad_token_id=_pad_id(tokenizer, tokenizer_config, config),
            padding_side=tokenizer_config.get("padding_side", "right")),
        created_by=f"embedrpc {__version__}")


def _save_fast_tokenizer(source: Path, root: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source, use_fast=True).backend_tokenizer.save(
        str(root / "tokenizer.json"))


def _token_id(tokenizer: BundleTokenizer, token) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    return tokenizer.token_id(token) if token else None


def _pad_id(tokenizer: BundleTokenizer, tokenizer_config: dict, config) -> int:
    for candidate in (_token_id(tokenizer, tokenizer_config.get("pad_token")),
                      getattr(config, "pad_token_id", None),
                      _token_id(tokenizer, tokenizer_config.get("eos_token")),
                      getattr(config, "eos_token_id", None)):
        if isinstance(candidate, int):
            return candidate
    return 0  # any id works: padded positions are masked out


def _max_input_tokens(source: Path, config) -> int:
    configured = _read_json(source / "sentence_bert_config.json").get("max_seq_length")
    if configured:
        return int(configured)
    limit = int(config.max_position_embeddings)
    model_max = _read_json(source / "tokenizer_config.json").get("model_max_length")
    return min(limit, int(model_max)) if isinstance(model_max, int) and model_max > 0 else limit


def _oracle_checkpoint(checkpoint: Checkpoint, task: str | None, torch_model,
                       staging: Staging) -> Path:
    """The directory sentence-transformers loads: the source as it is, or the loaded backbone
    saved as plain Qwen3 when an adapter was merged or the config names the repo's own code
    (which sentence-transformers could only load by running it)."""
    if task not in checkpoint.tasks_available and checkpoint.model_type == "qwen3":
        return checkpoint.path
    merged = staging.work_dir("merged")
    torch_model.save_pretrained(merged, safe_serialization=True)
    for name in (*TOKENIZER_FILES, *ST_FILES):
        if (checkpoint.path / name).is_file():
            shutil.copy2(checkpoint.path / name, merged / name)
    return merged


def _write_oracle(root: Path, manifest: Manifest, tokenizer: BundleTokenizer,
                  oracle_dir: Path) -> None:
    limit = manifest.parity_probe["max_tokens"]
    probes = make_probes(manifest.prompts, limit,
                         tokenizer.count_tokens)
    oracle = build_oracle(oracle_dir, max_seq_length=limit,
                          padding_side=manifest.tokenizer.padding_side)
    vectors = oracle_embeddings(oracle, probes, manifest.prompts)
    texts = calibration_texts()
    calibration = oracle_embeddings(oracle, [Probe(t, name) for name in sorted(manifest.prompts)
                                             for t in texts], manifest.prompts)
    manifest.calibration = {"corpus": CORPUS_NAME, "texts": len(texts),
                            "prompts": sorted(manifest.prompts),
                            "ranges": compute_ranges(calibration, manifest.matryoshka_dims)}
    (root / "parity").mkdir(exist_ok=True)
    (root / PROBES_FILE).write_text(json.dumps(probes_to_json(probes), indent=1,
                                               ensure_ascii=False) + "\n")
    np.save(root / ORACLE_FILE, vectors)
    import sentence_transformers

    manifest.parity_probe.update(oracle=f"sentence-transformers {sentence_transformers.__version__}",
                                 probes=len(probes), files=[PROBES_FILE, ORACLE_FILE])
