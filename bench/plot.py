"""The in-flight benchmark's pictures: one PNG per scenario, drawn by matplotlib.

Three panels: each peer's RSS over time from the burst's start (the load, then the
settle), the latency of each ``/healthz`` probe over the same time, and the
distribution of the edits' latencies (connect to last reply byte) by peer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"nginx": "tab:green", "aiohttp": "tab:blue", "imagegate": "tab:red"}


def draw(out: Path, name: str, results: list[dict[str, Any]]) -> dict[str, str]:
    """Write ``<name>-<scenario>.png`` per scenario; their file names by scenario."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        rows = [r for r in results if r["scenario"] == scenario]
        fig, (rss, probe, lat) = plt.subplots(1, 3, figsize=(15, 4.2))
        for r in rows:
            colour = COLOURS.get(r["target"])
            series = r["series"]
            if series["rss"]:
                t, kib = zip(*series["rss"], strict=True)
                rss.plot(t, [k / 1024 for k in kib], label=r["target"], color=colour)
            if series["healthz"]:
                t, s = zip(*series["healthz"], strict=True)
                probe.plot(t, [x * 1000 for x in s], ".", ms=3, label=r["target"],
                           color=colour)  # fmt: skip
            if series["latency"]:
                values = series["latency"]
                share = [(i + 1) / len(values) for i in range(len(values))]
                lat.plot(values, share, label=r["target"], color=colour)
        first = rows[0]
        rss.set(title=f"RSS, {first['clients']} edits at once", xlabel="s from burst",
                ylabel="MiB")  # fmt: skip
        probe.set(title="/healthz, connected to answer", xlabel="s from burst",
                  ylabel="ms")  # fmt: skip
        probe.axhline(100, color="grey", lw=0.8, ls="--")  # issue 19's target
        probe.set_yscale("log")
        lat.set(title=f"edit latency (upstream holds {first['hold_s']} s)",
                xlabel="s, connect to last byte", ylabel="share of edits")  # fmt: skip
        for ax in (rss, probe, lat):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{name}: {scenario}")
        fig.tight_layout()
        file = f"{name}-{scenario}.png"
        fig.savefig(out / file, dpi=80)
        plt.close(fig)
        files[scenario] = file
    return files
