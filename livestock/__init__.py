"""livestock: pig and cow detection in barn CCTV frames, from AI Hub zips to a scored contest answer.

One module per pipeline stage; every stage reads the previous stage's files from disk.
"""
from livestock.records import CLASS_NAMES, CLASS_TO_ID, Detections, ImageRecord

__all__ = ["CLASS_NAMES", "CLASS_TO_ID", "Detections", "ImageRecord"]
__version__ = "0.1.0"
