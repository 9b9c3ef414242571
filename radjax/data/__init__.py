"""Data: listing files (folders, CSV manifests), decoding (PNG/JPEG, DICOM), preprocessing,
augmentation (host and device), the three input pipelines: image files (`files`), decoded
arrays (`arrays`) and prepared TFDS datasets (`prepared`), opened by `datasets.open_pipeline`;
and what is planned over a dataset's files: splits (`splitting`), cross-validation folds
(`folds`), the audit's scan (`audit`)."""
