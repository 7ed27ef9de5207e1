"""The data side: AI Hub zips (real or synthetic) -> validated records -> YOLO-format dataset -> EDA -> splits."""
