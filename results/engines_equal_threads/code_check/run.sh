#!/bin/bash
# 2 epochs of YOLOv5n from scratch, seed 0, at two commits on the same data: do their results.csv agree to the bit?
cd /work/headrun/seed0
for v in old132 wt; do
  PYTHONPATH=/work/$v nice -n 19 /work/main/.venv/bin/python -m livestock.cli train --engine yolov5 --model yolov5n --weights '' \
    --data data/splits/multilabel/data.yaml --imgsz 320 --epochs 2 --batch 16 --workers 2 --seed 0 \
    --project /work/bitcheck --name $v > /work/bitcheck/$v.log 2>&1
done
echo done
