"""Generated messages of protos/tei/v1, the TEI-compatible API (scripts/gen_protos.sh)."""
