"""maskdoor's on-device application: LiteRT/TFLite inference, camera loop, alerts."""

__version__ = "0.1.0"
