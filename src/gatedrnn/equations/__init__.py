"""The math: each cell's equations (``cells``), every cell kind declared once (``kinds``: its
step, gates, state, parameters and engines), the reference engine that loops over the steps under
autograd (``reference``), and the log-space parallel scan of the minimal cells (``scan``).

This floor imports nothing else of gatedrnn; every engine above it is tested against it.
"""
