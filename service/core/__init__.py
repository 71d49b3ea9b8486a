"""The transport-free core: what a request means (embedder.py), its batching queue
(scheduler.py), output encodings (encoding.py), health and metrics. Knows no wire protocol."""
