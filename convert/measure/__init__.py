"""What measures rather than runs the door: ``maskdoor eval`` (``evaluation_run``, scoring on a
Pascal VOC dataset with ``dataset``, ``evaluate`` and ``pipeline_eval``), ``maskdoor bench``
(``bench``, with ``opcount``'s estimates) and the other projects' models run side by side
(``peers``)."""
