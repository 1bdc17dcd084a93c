"""The gRPC service: a transport-free core, a dynamic batcher and the servicer around them."""
