"""The evaluation side: detection with the raw-candidate cache, NMS tuning, the contest answer and metric,
error analysis and silver labels."""
