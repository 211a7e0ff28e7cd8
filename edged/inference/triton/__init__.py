"""The `triton` provider: the model's runs go to an NVIDIA Triton Inference Server
(KServe v2 over gRPC or HTTP), everything else stays in edged.

`config.py` (the `model.triton` section; no tritonclient needed to parse a config),
`client.py` (one remote model: per-thread clients, validation against the local graph,
health and back-off), `runner.py` (`TritonRunner`: a `ModelRunner` whose runs go to the
server, and to the local session of the same model while the server is unusable).
"""
