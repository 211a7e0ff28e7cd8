"""Inference: pre-process, manifest, providers, runner, formats, worker pool, ladder."""
