"""Every error maskdoor shows the operator. Each also inherits the matching built-in, so callers
may catch either; each message names the input and what to do about it."""

from __future__ import annotations


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


class ConfigError(MaskdoorError, ValueError):
    """The configuration file or a command-line override is invalid.

    ``problems`` holds one line per bad key (or one for a file that cannot be read at all).
    """

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = (f"{len(self.problems)} problems in the configuration; fix each:\n" +
                    "\n".join(f"  {p}" for p in self.problems))
        super().__init__(text)


class BrokerURLError(MaskdoorError, ValueError):
    """mqtt.url is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]."""


class BrokerFileError(MaskdoorError, OSError):
    """mqtt.password_file or mqtt.ca_certs cannot be read."""
