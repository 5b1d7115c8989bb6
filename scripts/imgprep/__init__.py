"""imgprep: turn image collections into sharded, training-ready TFRecord datasets."""

__version__ = "0.1.0"
