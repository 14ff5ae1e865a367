"""Peak resident memory of this process on Linux, for the CPU memory benchmarks (each configuration
runs in its own process so that one run's freed memory cannot hide the next one's peak)."""

from __future__ import annotations

import os
import resource


def resident_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_resident() -> None:
    with open("/proc/self/clear_refs", "w") as file:  # "5" resets VmHWM, the peak resident set
        file.write("5")


def peak_resident_bytes() -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
