"""`edged quantize`: static QDQ int8 for any model edged runs, kept only if it is accurate.

The steps, each for a reason measured on the CPUs edged runs on (field notes):

1. Frames. Calibration and held-out frames come from the configured cameras (`-c`), a
   folder of images or a video (`--frames`), or by default synthetic RoboCup scenes
   (`edged.synth`): calibration from a training seed block, held-out frames from the
   evaluation seeds, which also gives ground truth. Every frame goes through the
   model's own pre-processing (its manifest's `PreprocessSpec`), so the int8 ranges are
   those of the tensors the daemon feeds.
2. Prepare. Models below opset 13 are upgraded first (per-channel int8 weights of an
   opset-11 graph fail to load), then `quant_pre_process` (shape inference and graph
   optimisation) runs, as the onnxruntime docs require for good QDQ placement.
3. Candidates. Static QDQ with per-channel weights for each activation/weight type pair
   and calibration method of the search (`quick` or `full`). The final convolution(s)
   feeding each output and everything after them (box decode, argmax) stay in float by
   default: they produce scores, pixel coordinates and logits where int8 steps show.
   Then the fastest passing candidate is refined, a step at a time, each step timed in
   the same runs as its parent and kept only if it passes the gate and is >= 2% faster: (a)
   the convolutions whose outputs only reach the graph through a decision (a
   segmentation head's argmax) in int8 too; (b) the convolution that reads the image
   in float; (c) the same file run with onnxruntime's NhwcTransformer off (recorded in
   the manifest's `session`, which edged's runner applies).
4. Gate. Each candidate runs on held-out frames (never the calibration ones) through
   edged's own `ModelRunner` next to the fp32 model: mask pixel agreement and mIoU
   against the fp32 masks, detection agreement (boxes matched at IoU >= 0.5) and the mean
   score change; with ground truth (synthetic scenes) also real mIoU and mAP@0.5. Speed
   is the median of single-thread runs alternating with the fp32 model, so both see the
   same machine load. The fastest candidate that passes the gate is written, with a
   manifest that records how it was made and what was measured.

Needs the `onnx` package (`pip install 'edged[quantize]'`); the daemon never imports
this module.
"""

from edged.tools.quantize.calibration import Progress, frames_for, synthetic_frames
from edged.tools.quantize.gate import Gate
from edged.tools.quantize.report import iter_lines
from edged.tools.quantize.search import run_search

__all__ = ["Gate", "Progress", "frames_for", "iter_lines", "run_search", "synthetic_frames"]
