"""Capture stage: camera sources, each read by its own thread; the latest frame wins."""
