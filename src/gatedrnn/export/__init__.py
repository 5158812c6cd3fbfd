"""What the exporters trace (``torch.onnx.export``, ``torch.export``): the modules rebuilt from
exportable operators, ONNX's own recurrent operators or a scan over the cell equations.

One entry point, ``graph.export_forward``, for every sequence module. This floor sits above the
modules: importing it installs that entry point in the modules' shared forward
(``gatedrnn.modules.base.set_exporter``), and ``import gatedrnn`` imports it, so the modules never
import it themselves.
"""

from ..modules import base
from . import quantized as quantized  # installs the int8 modules' export in graph
from .graph import export_forward

base.set_exporter(export_forward)

__all__ = ["export_forward"]
