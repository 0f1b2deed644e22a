"""Training: MobileFaceNet and other backbones, margin heads, face datasets, distillation.

Models are built with ``tf_keras`` (the Keras 2 API), the same library that reads users' legacy
tf.keras ``.h5`` files, so what is trained here converts exactly like what users bring.
"""
