"""Workstation tooling: rebuild, train and quantise maskdoor's models (needs the [convert]
extra), and measure them (``convert.measure``: ``maskdoor eval`` and ``bench``, which run with
the device's own dependencies; only their side-by-side rows of other projects' models need
TensorFlow). This package imports ``edge``; ``edge`` never imports it."""


from pathlib import Path


def check_in_folder(spec_path, path, what: str) -> None:
    """A file a spec names by file name must sit in the spec's folder; ValueError otherwise."""
    if Path(path).resolve().parent != Path(spec_path).resolve().parent:
        raise ValueError(f"{path}: {what} must sit in the spec's folder "
                         f"({Path(spec_path).parent})")


def check_members(spec_path, models, what: str, holds: str) -> list[dict]:
    """The models a spec names by file name must sit in its folder, each with its sidecar
    (``holds`` says what the sidecar holds, for the error); ValueError otherwise. Returns the
    sidecars."""
    from edge.inference.tflite import load_sidecar
    for m in models:
        check_in_folder(spec_path, m, what)
    return [load_sidecar(m, holds) for m in models]
