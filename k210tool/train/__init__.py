"""Training: MobileFaceNet and other backbones, margin heads, face datasets, distillation.

Models are built with ``tf_keras`` (the Keras 2 API), the same library that reads users' legacy
tf.keras ``.h5`` files, so what is trained here converts exactly like what users bring.

Modules: ``config`` (TOML -> frozen dataclasses), ``heads`` (MarginHead: softmax, ArcFace, CosFace,
SphereFace, combined), ``models`` (MobileFaceNet, keras.applications backbones), ``data`` (identity
folders, TFRecord, RecordIO, the tf.data pipeline, ``prepare``, alignment, synthetic identities),
``loop`` (``train(config) -> TrainSummary``), ``distill`` (``distill(...) -> DistillResult``),
``schedule``, ``devices``, ``validation``, ``export``. See docs/training.md.
"""
