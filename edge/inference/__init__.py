"""The two models of a frame: the face detector (``detectors``, one module per format, built by
``detectors.load_detector``) and the mask classifier (``classifier``), both run through the one
TFLite loader (``tflite``). ``fakes`` holds scripted stand-ins for tests and benchmarks."""
