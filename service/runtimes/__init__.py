"""Inference runtimes: the interface and each runtime's declaration (one module each, listed
in registry.py), the crash-isolated worker, and how a runtime is chosen and proved on this host
(selection.py, selfcheck.py, measure.py, hostinfo.py)."""
