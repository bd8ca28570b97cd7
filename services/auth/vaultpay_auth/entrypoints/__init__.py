"""gRPC servicers, proto conversion, server composition and the CLI."""
