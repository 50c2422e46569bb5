"""Paru's pipeline: data, preprocessing, model, training, evaluation, explanations and prediction.

This package must stay light to import: TensorFlow is imported inside the functions that need it, so
Streamlit pages that only read metrics open fast.
"""

from core.settings import quiet_tensorflow

__version__ = "0.1.0"

# Before any module can import TensorFlow: its C++ start-up lines read as failures to users.
quiet_tensorflow()

# The paper's classes in the paper's order. Datasets may carry any subset or other classes; this order
# only decides how known classes are listed (see core.data.layout.order_classes).
PAPER_CLASSES = ("Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax")
