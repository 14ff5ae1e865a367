"""The named super-resolution training protocols: data, like the rest of the config.

A PSNR means little without the protocol that trained the network, so every SR report names one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SRProtocol:
    """How every SR training set is judged: L1 on (net(LR), HR) with Adam, ``iterations`` random batches of
    ``batch_size`` patches, the lr halved after each fraction in ``decay_at`` of the run."""

    name: str
    iterations: int
    batch_size: int
    lr: float
    decay_at: tuple[float, ...] = (0.5, 0.75)
    # Why this protocol exists and how far it is from convergence, printed with every report that names it.
    note: str = ""


# The named SR protocols (config key sr.protocol). Every report names the one that produced it.
SR_PROTOCOLS = {
    "quick": SRProtocol("quick", 3_000, 32, 1e-3, note=(
        "CPU smoke protocol, far from convergence: FSRCNN x2 stays below bicubic and 4x the batches add 1.8 dB "
        "to it on Set5, 0.35 dB to ESPCN (BENCHMARKS.md), so small sets look as good as the full one")),
    "espcn-converged": SRProtocol("espcn-converged", 12_000, 32, 1e-3, note=(
        "ESPCN's converged protocol by issue 15's rule: on the full x2 patches, doubling it to 24,000 batches adds "
        "0.02 dB on Set5 and 0.00 on BSD100 (BENCHMARKS.md); measured for ESPCN x2 only (at x4 doubling still adds "
        "0.14 dB on Set5: not converged there), about 8 min a run on a 2-core CPU")),
    "converged": SRProtocol("converged", 100_000, 64, 1e-3, note=(
        "the protocol for comparisons with published figures: 100k batches of 64, about 67x the patches quick "
        "shows a network; a GPU's work (about 95 ms per batch for ESPCN on a 2-core CPU). ESPCN x2 converges long "
        "before it (12,000 batches of 32: doubling adds 0.02 dB); for FSRCNN it is not yet measured")),
}


def sr_protocol(config) -> SRProtocol:
    """The protocol ``sr.protocol`` names (``config``: the ``sr`` section), with any number the config gives for iterations, batch_size or lr in
    place of its own; a changed protocol is named "<name>, modified (...)" so no report passes it off as the
    named one."""
    base = SR_PROTOCOLS[config.protocol]
    changes = {key: getattr(config, key) for key in ("iterations", "batch_size", "lr")
               if getattr(config, key) != "protocol" and getattr(config, key) != getattr(base, key)}
    if not changes:
        return base
    described = ", ".join(f"{key}={value}" for key, value in changes.items())
    return dataclasses.replace(base, name=f"{base.name}, modified ({described})", **changes)
