"""gatedrnn's engines against torch.nn and ONNX Runtime on the CPU; a thin script over ``gatedrnn bench``.

``auto`` follows the shipped rules alone (GATEDRNN_PLAN=off), as in the published tables, unless
``--plan`` asks for this machine's tuned plan (``gatedrnn tune``).

Usage: python benchmarks/speed.py [--plan] [--quick]
           [--modes inference,training,streaming,variants,targets,heads]
           [--cells lstm,gru,mingru,minlstm,slstm] [--shapes T,B,I,H;...] [--threads 1,2]
           [--repeats N] [--no-memory]
(see ``gatedrnn.toolkit.bench`` or ``docs/toolkit.md`` for what each table measures)
"""

import os
import sys

if __name__ == "__main__":
    shown = sys.argv[1:]
    argv = [a for a in shown if a != "--plan"]
    if "--plan" not in shown:
        os.environ["GATEDRNN_PLAN"] = "off"
    from gatedrnn.engines import dispatch
    from gatedrnn.toolkit.bench import main

    print(f"engine='auto' follows {dispatch.rules_in_effect()}\n")
    sys.exit(main(argv, shown))
