"""Milliseconds per SR training batch (forward, backward, Adam step) of each SR network at batch 32 and 64 on
48 px HR patches (x2): what one `quick` (3,000 x 32) or `converged` (100,000 x 64) run costs on this machine.

    python benchmarks/sr_speed.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from latentdistill import nets


def main(warmup: int = 5, timed: int = 20) -> None:
    torch.manual_seed(0)
    print("| network | batch | ms per batch | parameters |\n|---|---|---|---|")
    for name in ("espcn", "fsrcnn", "srcnn", "edsr"):
        for batch in (32, 64):
            model = nets.build(name, scale=2, task="sr")
            optimizer = torch.optim.Adam(model.parameters(), 1e-3)
            low, high = torch.rand(batch, 3, 24, 24), torch.rand(batch, 3, 48, 48)
            for step in range(warmup + timed):
                if step == warmup:
                    started = time.perf_counter()
                loss = F.l1_loss(model(low), high)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            milliseconds = (time.perf_counter() - started) / timed * 1000
            print(f"| {name} | {batch} | {milliseconds:.1f} | {sum(p.numel() for p in model.parameters())} |", flush=True)


if __name__ == "__main__":
    main()
