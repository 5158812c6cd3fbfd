"""What the CPU under this process can do, as far as choosing an engine cares.

``engine="auto"``'s borders move with the CPU: oneDNN runs a bfloat16 LSTM on bfloat16 hardware
(``avx512_bf16`` or AMX) at about twice fused-float32's speed and far behind it elsewhere; an
AVX2-only CPU has half the vector width of an AVX-512 one. The rules of ``dispatch.TABLE`` see
these features, and a tuned plan (``gatedrnn.engines.plan``) is keyed by the CPU's flags rather
than its model name (a VM may report only "AMD EPYC").

The flags come from ``/proc/cpuinfo`` on Linux; elsewhere (macOS, Windows) from what torch can
say (``torch.cpu._is_*_supported``, ``torch.backends.cpu.get_cpu_capability``). Reading them never
raises: a CPU nothing can be learnt about has no flags, so no row that needs a feature matches.

Example:
    >>> from gatedrnn.engines import machine
    >>> cpu = machine.detect()
    >>> cpu.isa in ("avx512", "avx2", "other") and isinstance(cpu.bf16, bool)
    True
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CPU:
    """The features of a CPU that move the engines' borders."""

    flags: frozenset[str]  # the feature flags as the OS reports them (lower case)
    isa: str  # the widest vector unit torch uses: "avx512", "avx2" or "other" (ARM, older x86)
    bf16: bool  # bfloat16 products in hardware: avx512_bf16, or AMX's amx_bf16 tiles
    amx: bool  # AMX tiles (Intel Sapphire Rapids and later)

    def key(self) -> str:
        """A short hash of the flags and the architecture: equal on CPUs that run the same code."""
        text = platform.machine() + ":" + " ".join(sorted(self.flags))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line for humans: the ISA and the bfloat16 hardware."""
        bf16 = ("AMX" if self.amx else "avx512_bf16") if self.bf16 else "no bfloat16 hardware"
        return f"{platform.machine()}, {self.isa}, {bf16}"


def _proc_flags() -> frozenset[str]:
    """The "flags" (x86) or "Features" (ARM) line of /proc/cpuinfo; empty where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return frozenset(value.lower().split())
    except OSError:
        pass
    return frozenset()


def _torch_says(name: str) -> bool:
    try:
        return bool(getattr(torch.cpu, name)())
    except (AttributeError, RuntimeError):  # an older torch, or no way to ask
        return False


def detect(flags: frozenset[str] | None = None) -> CPU:
    """The CPU of this process (or the one ``flags`` describe, for tests and for `--show`)."""
    if flags is None:
        flags = _proc_flags()
        if not flags:  # not Linux: what torch's own CPU probe says, in /proc/cpuinfo's words
            probes = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported",
                      "avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported",
                      "avx512_vnni": "_is_vnni_supported"}
            flags = frozenset(f for f, probe in probes.items() if _torch_says(probe))
            if "amx_tile" in flags:
                flags |= {"amx_bf16"}  # every AMX CPU so far has the bfloat16 tiles
    if "avx512f" in flags:
        isa = "avx512"
    elif "avx2" in flags:
        isa = "avx2"
    else:
        try:
            capability = torch.backends.cpu.get_cpu_capability().lower()
        except (AttributeError, RuntimeError):
            capability = ""
        isa = "avx512" if "avx512" in capability else "avx2" if "avx2" in capability else "other"
    amx = "amx_tile" in flags and "amx_bf16" in flags
    return CPU(flags, isa, amx or "avx512_bf16" in flags, amx)
