"""gatedrnn's fused engine against torch.nn on the CPU; a thin script over ``gatedrnn bench``.

Usage: python benchmarks/speed.py [--quick] [--modes inference,training,streaming,variants]
                                  [--cells lstm,gru] [--shapes T,B,I,H;...] [--no-memory]
"""

import sys

from gatedrnn.toolkit.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
