"""The benchmark chart: rows/s and peak RSS per contender, two bar panels, as a PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

LABELS = {
    "pipeline": "pipeline\n(shard+transform\n+publish)",
    "naive": "naive\npandas script",
    "floor": "floor\n(pyarrow+predict)",
    "shard": "shard step\nalone",
    "split": "GNU split\n-n l/K",
    "pipeline_parquet": "pipeline\nParquet in/out",
    "naive_parquet": "naive pandas\nParquet script",
    "floor_parquet": "floor Parquet\n(pyarrow+predict)",
}
COLORS = {"pipeline": "#1f77b4", "naive": "#d62728", "floor": "#7f7f7f", "shard": "#2ca02c", "split": "#bcbd22",
          "pipeline_parquet": "#aec7e8", "naive_parquet": "#ff9896", "floor_parquet": "#c7c7c7"}


def write_chart(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in LABELS if n in results]
    rates = [results[n]["rows_per_s"] for n in names]
    rss = [results[n]["peak_rss_mb"] for n in names]
    colors = [COLORS[n] for n in names]
    labels = [LABELS[n] for n in names]

    fig, (ax_rate, ax_rss) = plt.subplots(1, 2, figsize=(12 + 1.2 * max(0, len(names) - 5), 5),
                                          constrained_layout=True)
    bars = ax_rate.bar(labels, rates, color=colors)
    ax_rate.set_yscale("log")
    ax_rate.set_ylabel("rows per second (log scale, higher is better)")
    ax_rate.set_title("Throughput (median wall time)")
    for bar, value, name in zip(bars, rates, names, strict=True):
        text = f"{value / 1e6:.2f}M/s" if value >= 1e6 else f"{value / 1e3:.0f}k/s"
        wall = results[name]["wall_s"]
        text += f"\n{wall:.3f} s" if wall < 1 else f"\n{wall:.2f} s"
        ax_rate.annotate(text, (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                         fontsize=8, xytext=(0, 2), textcoords="offset points")
    # log scale (sharding is ~100x faster than scoring): bars start a decade below the smallest
    ax_rate.set_ylim(bottom=10 ** (math.floor(math.log10(max(min(rates), 1))) - 1), top=max(rates) * 4)

    bars = ax_rss.bar(labels, rss, color=colors)
    ax_rss.set_ylabel("peak RSS, MB (process tree, lower is better)")
    ax_rss.set_title("Peak memory")
    for bar, value in zip(bars, rss, strict=True):
        ax_rss.annotate(f"{value:.0f} MB", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax_rss.set_ylim(top=max(rss) * 1.15)
    for ax in (ax_rate, ax_rss):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)

    ratios = results.get("ratios", {})
    machine = results.get("machine", {})
    load = results.get("load_average", {}).get("before")
    lines = [f"airflow_bt batch scoring, {results['rows']:,} rows, {machine.get('cores', '?')} cores "
             f"({machine.get('cpu', '?')}), load {load}"]
    if "pipeline_vs_naive_throughput" in ratios:
        lines.append(f"CSV: pipeline vs naive: {ratios['pipeline_vs_naive_throughput']:.2f}x throughput, "
                     f"{ratios['pipeline_vs_naive_rss']:.2f}x memory; pipeline vs floor: "
                     f"{ratios['pipeline_vs_floor_time']:.2f}x time; shard vs split: "
                     f"{ratios['shard_vs_split_throughput']:.2f}x throughput")
    if "parquet_pipeline_vs_naive_throughput" in ratios:
        lines.append(f"Parquet: pipeline vs naive: {ratios['parquet_pipeline_vs_naive_throughput']:.2f}x throughput, "
                     f"{ratios['parquet_pipeline_vs_naive_rss']:.2f}x memory")
    fig.suptitle("\n".join(lines), fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
