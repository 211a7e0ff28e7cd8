"""Offline tools: bench, quantize, evaluate, inspect. Not on the daemon's runtime path."""
