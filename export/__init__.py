"""Offline conversion of a Hugging Face checkpoint into an embedrpc bundle (the `export`
extra)."""
