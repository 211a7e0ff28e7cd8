"""The execution providers edged knows: one table for the config and the runner.

Standard library only, so that `edged.config` can validate provider names and options
without importing onnxruntime; `edged.inference.runner` maps the same names to
onnxruntime's.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["OPTION_ALIASES", "PROVIDER_NAMES", "PROVIDER_OPTIONS", "provider_chain"]

# edged's provider name (what the config writes) -> onnxruntime's
PROVIDER_NAMES: Final[dict[str, str]] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

# short option names edged accepts besides onnxruntime's own
OPTION_ALIASES: Final[dict[str, dict[str, str]]] = {"tensorrt": {"fp16": "trt_fp16_enable"}}

# The options each provider takes (onnxruntime's names; `fp16` is edged's short form of
# trt_fp16_enable). A misspelt option would otherwise be ignored by some onnxruntime
# builds and abort session creation in others, far from the config line.
PROVIDER_OPTIONS: Final[dict[str, frozenset[str]]] = {
    "cpu": frozenset({"use_arena"}),
    "cuda": frozenset({
        "device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search",
        "do_copy_in_default_stream", "cudnn_conv_use_max_workspace", "cudnn_conv1d_pad_to_nc1d",
        "enable_cuda_graph", "tunable_op_enable", "tunable_op_tuning_enable", "use_tf32",
        "prefer_nhwc", "enable_skip_layer_norm_strict_mode", "use_ep_level_unified_stream"}),
    "tensorrt": frozenset({
        "fp16", "device_id", "trt_max_workspace_size", "trt_fp16_enable", "trt_int8_enable",
        "trt_int8_calibration_table_name", "trt_int8_use_native_calibration_table",
        "trt_engine_cache_enable", "trt_engine_cache_path", "trt_engine_cache_prefix",
        "trt_timing_cache_enable", "trt_timing_cache_path", "trt_force_timing_cache",
        "trt_builder_optimization_level", "trt_max_partition_iterations",
        "trt_min_subgraph_size", "trt_dla_enable", "trt_dla_core",
        "trt_force_sequential_engine_build", "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback", "trt_cuda_graph_enable", "trt_detailed_build_log",
        "trt_dump_subgraphs", "trt_sparsity_enable", "trt_auxiliary_streams",
        "trt_profile_min_shapes", "trt_profile_max_shapes", "trt_profile_opt_shapes"}),
    "openvino": frozenset({
        "device_type", "precision", "num_of_threads", "num_streams", "cache_dir",
        "enable_opencl_throttling", "disable_dynamic_shapes", "enable_qdq_optimizer",
        "model_priority", "load_config", "context"}),
}


def provider_chain(name: str, threads: int) -> tuple[tuple[str, dict[str, Any]], ...]:
    """One provider to measure on its own, with the CPU EP behind it for the nodes it
    cannot take (just the CPU EP for "cpu"). OpenVINO keeps its own thread pool, so it
    gets the thread count the CPU EP would use."""
    if name == "cpu":
        return (("cpu", {}),)
    return ((name, {"num_of_threads": threads} if name == "openvino" else {}), ("cpu", {}))
