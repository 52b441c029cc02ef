"""From faces per frame to alerts: the motion gate that skips still frames (``motion``), one
identity per person across frames (``tracker``) and the door's rule for who is warned
(``policy``)."""
