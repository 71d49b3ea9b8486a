"""Inference runtimes behind one interface."""
