"""The math: each cell's equations (``cells``), the reference engine that loops over them under
autograd (``reference``), and the log-space parallel scan of the minimal cells (``scan``).

This floor imports nothing else of gatedrnn; every engine above it is tested against it.
"""
