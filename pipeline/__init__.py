"""DepthSegNet24 reference pipeline: data extraction, teachers, student training and evaluation."""

__version__ = "0.1.0"
