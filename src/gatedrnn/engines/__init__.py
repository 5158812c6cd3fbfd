"""The engines: which one runs a call (``dispatch``), the layer stack they plug into (``stack``),
the fused numba CPU kernels (``kernels``), and the special paths for one step (``one_step``) and
short small-batch inference (``lean_path``).

Imports only the math below it (``gatedrnn.equations``); numba is imported when a kernel first runs.
"""
