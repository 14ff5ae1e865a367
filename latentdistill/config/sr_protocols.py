"""The named super-resolution training protocols: data, like the rest of the config.

A PSNR means little without the protocol that trained the network, so every SR report names one.
"""

from __future__ import annotations

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
        "CPU smoke protocol: minutes per network, far from convergence (FSRCNN x2 is below bicubic at this "
        "budget, ESPCN about 2 dB below published figures), so small sets look as good as the full one")),
    "converged": SRProtocol("converged", 100_000, 64, 1e-3, note=(
        "the protocol for published comparisons: 100k batches of 64 (about 20x the patches quick shows a "
        "network); a GPU protocol, about 90 ms per batch for FSRCNN on a 2-core CPU")),
}
