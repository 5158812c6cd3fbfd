"""gatedrnn's engines against torch.nn and ONNX Runtime on the CPU; a thin script over ``gatedrnn bench``.

Usage: python benchmarks/speed.py [--quick]
           [--modes inference,training,streaming,variants,targets,heads]
           [--cells lstm,gru,mingru,minlstm,slstm] [--shapes T,B,I,H;...] [--threads 1,2]
           [--repeats N] [--no-memory]
(see ``gatedrnn.toolkit.bench`` or ``docs/toolkit.md`` for what each table measures)
"""

import sys

from gatedrnn.toolkit.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
