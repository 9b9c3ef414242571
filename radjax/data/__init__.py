"""Data: listing files (folders, CSV manifests), decoding (PNG/JPEG, DICOM), preprocessing,
augmentation (host and device), and the three input pipelines: image files (`files`), decoded
arrays (`arrays`) and prepared TFDS datasets (`prepared`), opened by `datasets.open_pipeline`."""
