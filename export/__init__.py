"""Offline conversion of a Hugging Face checkpoint into an embedrpc bundle (needs the `export` extra)."""
