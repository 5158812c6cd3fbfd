"""What the exporters trace (``torch.onnx.export``, ``torch.export``): the modules rebuilt from
exportable operators, ONNX's own recurrent operators or a scan over the cell equations.
"""
