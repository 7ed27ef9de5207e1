"""Per-epoch phase times (train loop, validation) of YOLO11n, fine-tuned vs from scratch, same data and settings
as the starts comparison (multilabel split, 320 px, batch 16, 2 loader workers, seed 0, no plots); also how many
candidates above conf 0.001 reach Ultralytics' NMS during validation (nms_in) and how many boxes leave it (nms_out).
The timers are extra Ultralytics callbacks and the counter a wrapper around its NMS, added here only.

usage: python phase_timing.py NAME WEIGHTS OUT_FOLDER EPOCHS   (WEIGHTS '' for from scratch)
run in a folder holding data/splits/multilabel (livestock pipeline --only synth,prepare,split_multilabel).
torch is imported before Ultralytics on purpose: Ultralytics' import sets OMP_NUM_THREADS=1, and torch loaded after
it computes with one thread (the package's offline layer now guards against this itself)."""
import json, sys, time
from pathlib import Path

import torch
from livestock.model.ultralytics import training as T

start_name, weights, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
marks = []
counts = {"val_images": 0, "nms_in": 0, "nms_out": 0}

def mark(ev):
    return lambda obj: marks.append((ev, time.perf_counter()))

orig_attach = T._RunCapture.attach
def attach(self, model):
    orig_attach(self, model)
    for ev in ("on_train_epoch_start", "on_train_epoch_end", "on_val_start", "on_val_end", "on_fit_epoch_end"):
        model.add_callback(ev, mark(ev))
T._RunCapture.attach = attach

# count what NMS receives and returns during validation
import ultralytics.utils.nms as nmsmod
orig_nms = nmsmod.non_max_suppression
def counting_nms(prediction, conf_thres=0.25, *a, **k):
    out_ = orig_nms(prediction, conf_thres, *a, **k)
    p = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
    nc = p.shape[1] - 4
    above = (p[:, 4:4 + nc].amax(1) > conf_thres).sum().item()
    counts["val_images"] += p.shape[0]; counts["nms_in"] += above
    counts["nms_out"] += sum(len(o) for o in (out_[0] if isinstance(out_, tuple) else out_))
    return out_
nmsmod.non_max_suppression = counting_nms
import ultralytics.models.yolo.detect.val as dval
if hasattr(dval, "nms"):
    dval.nms.non_max_suppression = counting_nms

t0 = time.perf_counter()
r = T.train("data/splits/multilabel/data.yaml", model="yolo11n", weights=weights, imgsz=320, epochs=epochs,
            batch_size=16, workers=2, seed=0, project=str(out), name=start_name, exist_ok=True, plots=False)
total = time.perf_counter() - t0
rows, cur = [], {}
for ev, t in marks:
    cur[ev] = t
    if ev == "on_fit_epoch_end":
        rows.append({"train_s": round(cur["on_train_epoch_end"] - cur["on_train_epoch_start"], 2),
                     "val_s": round(cur["on_val_end"] - cur["on_val_start"], 2),
                     "epoch_s": round(cur["on_fit_epoch_end"] - cur["on_train_epoch_start"], 2)})
res = {"start": start_name, "weights": weights, "total_s": round(total, 1), "epochs": rows, "nms": counts,
       "torch_threads": torch.get_num_threads()}
print(json.dumps(res))
(out / f"{start_name}.json").write_text(json.dumps(res, indent=1))
