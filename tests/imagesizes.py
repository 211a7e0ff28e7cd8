"""Frame sizes for the parity tests against reference implementations: portrait and
landscape, odd and tiny, each upsampling factor of the letterbox."""

SIZES = [(810, 1080), (1280, 720), (640, 480), (333, 500), (1000, 1000), (321, 123),
         (720, 1280), (1920, 1080), (123, 321)]
