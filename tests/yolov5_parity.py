"""YOLOv5-seg (the yolov5 repository's own model code, random but calibrated weights,
exported with torch.onnx) served by edged against that repository's own post-processing
(its letterbox; its non_max_suppression, scale_boxes and process_mask_native: the
retina_masks path of segment/predict.py), on the frame sizes of test_ultralytics.py.

Not a pytest module: the yolov5 package imports torchvision, which cannot load beside
the CPU torch wheel CI uses. Run by hand in a venv with torch and torchvision:

    pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime 'setuptools<70'
    pip install --no-deps yolov5==7.0.14 ultralytics==8.4.190 gitpython gitdb smmap thop
    pip install -e . pandas seaborn scipy tqdm matplotlib
    python tests/yolov5_parity.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
import yolov5
from yolov5.models.yolo import SegmentationModel
from yolov5.utils.augmentations import letterbox
from yolov5.utils.general import non_max_suppression, scale_boxes
from yolov5.utils.segment.general import process_mask_native

sys.path.insert(0, str(Path(__file__).parent))
from test_ultralytics import SIZES  # noqa: E402

from edged.inference.runner import ModelOptions, ModelRunner  # noqa: E402
from edged.results import instance_extents  # noqa: E402

IMGSZ = 320


class Export(torch.nn.Module):
    def __init__(self, m: SegmentationModel) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.m(x)
        return y[0], y[1]


def preprocess(frame: np.ndarray) -> torch.Tensor:
    img = letterbox(frame, (IMGSZ, IMGSZ), auto=False)[0]
    return torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255


def calibrated_export(path: Path) -> None:
    torch.manual_seed(0)
    cfg = Path(yolov5.__file__).parent / "models/segment/yolov5n-seg.yaml"
    m = SegmentationModel(str(cfg), ch=3, nc=80).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    head = m.model[-1]
    x = preprocess(cv2.resize(cv2.imread(str(Path(yolov5.__file__).parent / "data/images/bus.jpg")),
                              (640, 480)))
    no = head.no  # 5 + nc + nm per anchor
    outs: list[torch.Tensor] = []
    hooks = [c.register_forward_hook(lambda _m, _i, o: outs.append(o)) for c in head.m]
    with torch.no_grad():
        for c in head.m:
            c.bias.zero_()
        m(x)
        raw = torch.cat([o.view(o.shape[0], head.na, no, -1).transpose(1, 2).reshape(
            o.shape[0], no, -1) for o in outs], 2)[0]  # [no, anchors]
        for c in head.m:
            w = c.weight.view(head.na, no, -1)
            w[:, :4] *= 0.5 / raw[:4].std()  # boxes: sigmoid around 0.5, many sizes
            w[:, 4] *= 0.1 / raw[4].std()
            w[:, 5:5 + head.nc] *= 1.5 / raw[5:5 + head.nc].std()
            w[:, 5 + head.nc:] *= 1.0 / raw[5 + head.nc:].std()
        outs.clear()
        m(x)
        raw = torch.cat([o.view(o.shape[0], head.na, no, -1).transpose(1, 2).reshape(
            o.shape[0], no, -1) for o in outs], 2)[0]
        best = raw[5:5 + head.nc].max(0).values
        # objectness ~0.99 (the classes decide); ~3% of anchors above 0.25
        q = float(torch.quantile(best, 0.97))
        for c in head.m:
            b = c.bias.view(head.na, no)
            b[:, 4] = 5.0
            b[:, 5:5 + head.nc] = float(np.log(0.25 / 0.75)) - q
    for h in hooks:
        h.remove()
    torch.onnx.export(Export(m), x, str(path), input_names=["images"],
                      output_names=["output0", "output1"], opset_version=17, dynamo=False)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yolov5n-seg.onnx"
        calibrated_export(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        runner = ModelRunner(ModelOptions(path=path, threads=1))
        m = runner.manifest
        print(f"edged: {m.format} {m.options} iou {m.iou_threshold} max {m.max_detections}")
        photo = cv2.imread(str(Path(yolov5.__file__).parent / "data/images/bus.jpg"))
        worst = 1.0
        for w, h in SIZES:
            frame = cv2.resize(photo, (w, h))
            x = preprocess(frame)
            outs = session.run(None, {"images": x.numpy()})
            pred, proto = (torch.from_numpy(t) for t in outs)
            det = non_max_suppression(pred, 0.25, 0.45, max_det=1000, nm=32)[0]
            det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], frame.shape).round()
            ref_masks = (process_mask_native(proto[0], det[:, 6:], det[:, :4], frame.shape[:2])
                         .numpy() > 0) if len(det) else np.zeros((0, h, w), bool)
            # pre-processing compared on the tensors; post-processing on the same outputs
            # (random weights give near-tied scores that two runs of the graph on inputs
            # 6e-8 apart may order differently)
            pre = runner._preprocessor(1)
            box = pre(frame, 0)
            assert np.abs(pre.tensor - x.numpy()).max() < 1e-6
            d = runner.adapter.postprocess(outs, box, w, h).detections
            ro = np.argsort(-det[:, 4].numpy(), kind="stable")
            eo = np.argsort(-d.scores, kind="stable")
            keep = list(ro)
            ious = []
            if len(keep) != len(d):
                print(f"{w}x{h}: yolov5 {len(det)}, edged {len(d)}")
            for a, b in zip(keep, eo, strict=False):
                ours = np.zeros((h, w), bool)
                x0, y0, x1, y1 = instance_extents(d.boxes[b:b + 1])[0]
                ours[y0:y1, x0:x1] = d.instance_masks[b] > 0
                union = np.logical_or(ours, ref_masks[a]).sum()
                inter = np.logical_and(ours, ref_masks[a]).sum()
                ious.append(inter / union if union else 1.0)  # both empty: the same
            boxes_ok = len(keep) == len(d) and np.allclose(
                d.boxes[eo], det[keep, :4].numpy(), atol=0.05)
            mean = float(np.mean(ious)) if ious else 1.0
            worst = min(worst, mean)
            print(f"{w}x{h}: {len(d)} detections, boxes {'equal' if boxes_ok else 'DIFFER'}, "
                  f"mask IoU mean {mean:.4f} min {min(ious) if ious else 1:.4f}")
        print(f"worst mean IoU {worst:.4f}")
    return 0 if worst >= 0.99 else 1


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    raise SystemExit(main())
