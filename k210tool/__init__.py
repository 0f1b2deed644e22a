"""k210tool: take a Keras face-recognition model all the way onto a Kendryte K210 board.

Library entry points return dataclasses; the ``k210tool`` command line is a thin layer on top.
"""

__version__ = "0.1.0"
