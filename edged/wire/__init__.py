"""The wire: message codec, protocol constants, the ZeroMQ publisher and the subscriber client."""
