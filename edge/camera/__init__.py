"""Where frames come from: a source per kind of camera (``sources``, ``pi_camera``) and the
readers that hand the door loop its frames (``readers``). A new camera type is a
``FrameSource`` subclass and one branch in ``sources.open_source``."""
