"""Keras 3 model builders and backbone loaders, with no Luigi and nothing of ``tasks``.

``models.builders`` holds the registry of model builders (importing it imports Keras); ``models.backbone_spec``
and ``models.files`` are plain Python, so code that only computes keys or names files stays free of TensorFlow.
"""
