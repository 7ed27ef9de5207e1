"""Experiments: trainings compared under one budget over several seeds (``runner``), and the comparisons the
README reports, each resumable across working sessions (``engines``: YOLOv5n vs YOLO11n vs YOLO26n)."""
