"""Exceptions of maskdoor. Each also inherits the matching built-in, so callers may catch either."""


class MaskdoorError(Exception):
    """Base of every error maskdoor raises on purpose; its message says what to do next."""


class ModelError(MaskdoorError, ValueError):
    """A model file is missing, unreadable, or not the kind of model expected."""


class RuntimeMissingError(MaskdoorError, ImportError):
    """No TFLite interpreter (LiteRT or tflite-runtime) or no Edge TPU library is installed."""


class ImageError(MaskdoorError, ValueError):
    """An input file is not a readable image."""


class DatasetError(MaskdoorError, ValueError):
    """A dataset folder or annotation is missing or malformed."""


class CameraError(MaskdoorError, OSError):
    """A frame source could not be opened or stopped delivering frames."""
