"""The `embedrpc` command. Subcommands import their (possibly heavy) modules only when run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedrpc.service.errors import EmbedrpcError


def _export(args: argparse.Namespace) -> int:
    try:
        from embedrpc.export.pipeline import export_bundle
    except ImportError as exc:
        return _fail(f"export needs the export extra (pip install 'embedrpc[export]'): {exc}")
    try:
        export_bundle(args.model, args.out, revision=args.revision, task=args.task,
                      tasks=args.tasks,
                      formats=args.formats, force=args.force,
                      probe_max_tokens=args.probe_max_tokens)
    except EmbedrpcError as exc:
        return _fail(str(exc))
    except OSError as exc:  # disk full, permissions: the staging area is already removed
        return _fail(f"export failed writing files: {exc}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from embedrpc.service.runtimes.measure import format_report, validate_bundle

    try:
        results = validate_bundle(args.bundle, args.artifact or None,
                                  padding_side=args.padding_side)
    except EmbedrpcError as exc:
        return _fail(str(exc))
    print(format_report(results))
    return 0 if all(r.passed for r in results) else 1


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from embedrpc.service.config import from_arguments
    from embedrpc.service.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(from_arguments(args)))
    except (EmbedrpcError, OSError) as exc:
        return _fail(str(exc))
    return 0


def _embed(args: argparse.Namespace) -> int:
    from embedrpc.service.client import run

    return run(args)


def _health(args: argparse.Namespace) -> int:
    from embedrpc.service.client import run_health

    return run_health(args)


def _fail(message: str) -> int:
    print(f"embedrpc: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    from embedrpc.service import __version__
    from embedrpc.service.bundle import formats

    parser = argparse.ArgumentParser(prog="embedrpc", description=(
        "Serve jina-embeddings-v5-text-small (Qwen3 last-token embedders) over gRPC."))
    parser.add_argument("--version", action="version", version=f"embedrpc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser("export", help="convert a checkpoint into a bundle",
                                 description="Convert a Hugging Face checkpoint (hub id or local "
                                             "directory) into a parity-checked bundle.")
    export.add_argument("model", help="hub id (org/name) or local checkpoint directory")
    export.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    export.add_argument("--revision", help="hub branch, tag or commit")
    export.add_argument("--task", help="LoRA task to merge for a base repo with adapters/: "
                                       "retrieval, text-matching, clustering, classification")
    export.add_argument("--tasks", help="a base repo's tasks to serve from one backbone, their "
                                        "adapters applied at run time: comma-separated (the "
                                        "first is the default) or all")
    export.add_argument("--formats", help=f"comma-separated: {', '.join(formats.FORMATS)}, or "
                                          f"the groups {', '.join(formats.FAMILIES)}, all "
                                          f"(default: all)")
    export.add_argument("--force", action="store_true", help="replace a non-empty --out")
    export.add_argument("--probe-max-tokens", type=int, default=512,
                        help="longest parity probe in tokens (capped at the model's limit)")
    export.set_defaults(run=_export)

    validate = commands.add_parser("validate", help="check a bundle's checksums and parity")
    validate.add_argument("bundle", type=Path)
    validate.add_argument("--artifact", action="append", help="only this artifact (repeatable)")
    validate.add_argument("--padding-side", choices=["right", "left"],
                          help="pad on this side (default: the manifest's)")
    validate.set_defaults(run=_validate)

    from embedrpc.service import client, config

    serve = commands.add_parser("serve", help="serve a bundle over gRPC",
                                description="Serve a bundle (or a model id / checkpoint, exported "
                                            "first) over gRPC. Flags default to EMBEDRPC_* "
                                            "environment variables.")
    config.add_arguments(serve)
    serve.set_defaults(run=_serve)

    embed = commands.add_parser("embed", help="call a server and print JSON")
    client.add_arguments(embed)
    embed.set_defaults(run=_embed)

    health = commands.add_parser("health", help="check a server's gRPC health (exit 0: SERVING)")
    client.add_health_arguments(health)
    health.set_defaults(run=_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
