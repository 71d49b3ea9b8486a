"""Prove a runtime candidate on this host before serving it, and remember the verdict.

A candidate passes when, in a child process, it loads its artifact, embeds the bundle's stored
parity probes and meets the artifact's bar against the stored oracle vectors; the same run
times the probes, which is how auto-selection compares runtimes on a host nobody measured.
A crash (any signal), a hang or a load error is a failed verdict naming it.

Verdicts are cached per host fingerprint (CPU model and flags, library versions), artifact,
tokenizer and probe checksums and runtime options, so a restart does not pay for the check
again. A verdict that says something about these files rather than the host (they fail their
checksums) or that may not repeat (a time-out) is not cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from embedrpc.service.bundle import layout
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.manifest import BundleError
from embedrpc.service.runtimes import hostinfo, registry
from embedrpc.service.runtimes.interface import RuntimeOptions
from embedrpc.service.runtimes.measure import failure_line, measure
from embedrpc.service.runtimes.selection import Candidate, Verdict

log = logging.getLogger("embedrpc.selfcheck")
# 2: every runtime's libraries (OpenVINO's too) in the host fingerprint, and the manifest's
# own bytes in the key (a verdict about one manifest never answers for an edited copy)
CACHE_VERSION = 2


class VerdictCache:
    """One JSON file per verdict under `directory`; an unwritable directory only costs speed."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    def get(self, key: str) -> Verdict | None:
        if self.directory is None:
            return None
        try:
            data = json.loads((self.directory / f"{key}.json").read_text())["verdict"]
            return Verdict(Candidate(**data.pop("candidate")), cached=True, **data)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, verdict: Verdict, context: dict) -> None:
        if self.directory is None:
            return
        record = {"verdict": {"candidate": {"runtime": verdict.candidate.runtime,
                                            "artifact": verdict.candidate.artifact},
                              "passed": verdict.passed, "failure": verdict.failure,
                              "min_cosine": verdict.min_cosine,
                              "tokens_per_s": verdict.tokens_per_s},
                  "context": context}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, staged = tempfile.mkstemp(dir=self.directory, suffix=".partial")
            with os.fdopen(handle, "w") as out:
                json.dump(record, out, indent=1)
            os.replace(staged, self.directory / f"{key}.json")
        except OSError as exc:
            log.warning("cannot cache the self-check verdict in %s: %s", self.directory, exc)


class SelfCheck:
    """`check(candidate)` for selection.choose: cached verdict, else a child-process run."""

    def __init__(self, bundle: Bundle, options: RuntimeOptions, cache: VerdictCache,
                 timeout: float | None = None):
        self.bundle, self.options, self.cache, self.timeout = bundle, options, cache, timeout

    def __call__(self, candidate: Candidate) -> Verdict:
        context = self._context(candidate)
        key = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None and cached.candidate == candidate:
            log.info("self-check of %s: cached verdict (%s)", candidate, cached.describe())
            return cached
        try:
            verdict = self._run(candidate)
        except BundleError as exc:  # these files, not this host and artifact: never cached
            return Verdict(candidate, False, f"failed ({exc})")
        log.log(logging.INFO if verdict.passed else logging.WARNING, "self-check: %s",
                verdict.describe())
        if not verdict.failure.startswith("timed out"):  # a hang may not happen again
            self.cache.put(key, verdict, context)
        return verdict

    def _run(self, candidate: Candidate) -> Verdict:
        """The measured verdict; BundleError when the bundle's own files are at fault."""
        artifact = self.bundle.manifest.artifact(candidate.artifact)
        self.bundle.verify([artifact.name])
        if artifact.parity is None:
            raise BundleError(f"the manifest records no parity bar for {artifact.name}")
        bar = artifact.parity.bar
        log.info("self-check of %s on %s: embedding the bundle's parity probes in a child "
                 "process", candidate, hostinfo.cpu().model)
        results = measure(self.bundle, artifact.name, bar, options=self.options,
                          kind=candidate.runtime, timeout=self.timeout)  # one per task
        failed = next((r for r in results if r.failure), None)
        if failed is not None:
            log.warning("%s", failure_line(self.bundle, failed, "self-checking",
                                           candidate.runtime))
            return Verdict(candidate, False, failed.failure)
        worst = min(results, key=lambda r: r.parity.min_cosine)
        rate = sum(r.tokens_per_s for r in results) / len(results)
        min_cosine = worst.parity.min_cosine
        if not worst.passed:
            task = f" for task {worst.task}" if worst.task else ""
            return Verdict(candidate, False, f"min cosine {min_cosine:.5f}{task} is below its "
                                             f"bar {bar}", min_cosine, rate)
        return Verdict(candidate, True, "", min_cosine, rate)

    def _context(self, candidate: Candidate) -> dict:
        manifest = self.bundle.manifest
        return {"version": CACHE_VERSION, "host": hostinfo.fingerprint(registry.libraries()),
                "runtime": candidate.runtime, "artifact": candidate.artifact,
                "artifact_sha256": [f.sha256 for f in manifest.artifact(candidate.artifact).files],
                "parity_sha256": [self.bundle.hashes.sha256(self.bundle.root / name)
                                  for name in manifest.parity_files()],
                "tokenizer_sha256": [f.sha256 for f in manifest.tokenizer.files],
                "manifest_sha256": self.bundle.hashes.sha256(self.bundle.root / layout.MANIFEST),
                "options": asdict(self.options)}
