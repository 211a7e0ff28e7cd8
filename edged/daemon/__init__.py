"""The daemon: lifecycle, camera loops, the latency budget, sinks, health, telemetry."""
