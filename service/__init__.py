"""embedrpc serving: bundle contract, tokenisation, runtimes and the gRPC server (torch-free)."""

__version__ = "0.1.0"
