"""Workstation tooling: rebuild, train and quantise maskdoor's models (needs the [convert] extra)."""


def check_members(spec_path, models, what: str, holds: str) -> list[dict]:
    """The models a spec names by file name must sit in its folder, each with its sidecar
    (``holds`` says what the sidecar holds, for the error); ValueError otherwise. Returns the
    sidecars."""
    from pathlib import Path

    from edge.tflite import load_sidecar
    folder = Path(spec_path).resolve().parent
    for m in models:
        if Path(m).resolve().parent != folder:
            raise ValueError(f"{m}: {what} must sit in the spec's folder "
                             f"({Path(spec_path).parent})")
    return [load_sidecar(m, holds) for m in models]
