"""Generated gRPC stubs of the ``embedsvc.v1`` API (built from protos/ at install time)."""
