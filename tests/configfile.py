"""The daemon config the output tests start from: the demo model, synthetic cameras, the
ZeroMQ output on an ipc socket in the test's folder, a stats line every second; each test
adds its output's section (view, foxglove, record, ros2, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEMO_MODEL = "builtin:yoeo-demo-int8.onnx"


def synthetic(seed: int = 38, *, fps: float = 10, width: int = 640, height: int = 480,
              **extra: Any) -> dict[str, Any]:
    """One synthetic camera's section (`extra`: frame_id, ...)."""
    return {"source": "synthetic", "seed": seed, "width": width, "height": height,
            "fps": fps, **extra}


def daemon_config(tmp_path: Path, cameras: dict[str, dict[str, Any]], *,
                  name: str = "edged.yaml", model: dict[str, Any] | None = None,
                  stats_s: float = 1, **sections: dict[str, Any] | None) -> Path:
    """Write `tmp_path / name` and return its path. `model` adds to the model section;
    `sections` are the output sections (None leaves one out)."""
    doc: dict[str, Any] = {
        "model": {"path": DEMO_MODEL, "threads": 1, "warmup_runs": 1, **(model or {})},
        "cameras": cameras,
        "publish": {"endpoints": [f"ipc://{tmp_path}/pub.sock"]},
        "log": {"stats_interval_s": stats_s},
    }
    doc.update({k: v for k, v in sections.items() if v is not None})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    return path
