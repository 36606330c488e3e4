"""The report: the machine, one Markdown table per backend, the W1 plot, and the command."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.results import BackendResult, Row

__all__ = ["machine", "markdown", "plot_w1", "table"]

#: The backends issue 6 sets targets for; the others' "met?" column is for information only.
TARGETED = frozenset({"postgres", "mysql", "sqlite", "redis"})
UNTARGETED = 'Issue 6 sets no targets for this backend: the "met?" column is for information only.'
MEMORY_NOTE = (
    "The memory baseline is plain dicts of JSON strings with a dict index: no copies, no "
    "validation, no versions. It shows the floor, not a fair competitor."
)
MONGO_CAVEAT = (
    "The Mongo numbers come from a pure-Python MongoDB-wire-compatible test server (mongoeco): "
    "they say nothing about MongoDB's speed. Reported, not tuned to."
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def machine(results: Sequence[BackendResult]) -> list[str]:
    """Lines describing where the benchmark ran."""
    lines = [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical cores visible",
        f"- Memory: {_memory()}",
        f"- OS: {platform.system()} {platform.release()} ({platform.machine()})",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
    ]
    servers = [f"{r.name}: {r.server}" for r in results if r.server]
    if servers:
        lines.append("- Servers: " + "; ".join(servers) + " (all on 127.0.0.1)")
    return lines


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "messages":
        return f"{value:.0f}"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def _met(row: Row) -> str:
    met = row.met
    return "" if met is None else ("yes" if met else "**no**")


def table(result: BackendResult) -> list[str]:
    """The Markdown table of one backend."""
    lines = [
        "| scenario | ours | baseline | ratio | target | met? |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in result.rows:
        base = _number(row.baseline, row.unit)
        if row.reference != "baseline" and row.baseline is not None:
            base += f" ({row.reference})"
        ratio = row.ratio
        ratio_text = "-" if ratio is None or row.check == "zero" else f"{ratio:.2f}x"
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| {row.scenario}{note} | {_number(row.ours, row.unit)} | {base} | {ratio_text} "
            f"| {row.target} | {_met(row)} |"
        )
    return lines


def plot_w1(results: Sequence[BackendResult], path: Path) -> bool:
    """Plot W1's per-save cost against thread length: one panel per backend, its save next to
    its baseline and to the same growth through ``store.append`` (each panel on its own scale,
    so that no backend's lines hide another's). Returns whether there was anything to plot."""
    measured = [r for r in results if r.w1]
    if not measured:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(measured))
    rows = -(-len(measured) // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 2.9 * rows + 0.6), squeeze=False
    )
    for axes, result in zip(grid.flat, measured, strict=False):
        lengths = sorted(result.w1)
        ours = [result.w1[length][0] * 1000 for length in lengths]
        base = [result.w1[length][1] * 1000 for length in lengths]
        axes.plot(lengths, ours, "o-", color="tab:blue", label="add_message + save")
        axes.plot(lengths, base, "s--", color="tab:grey", label="raw baseline")
        highest = max(ours + base)
        if all(length in result.w1_append for length in lengths):
            appended = [result.w1_append[length] * 1000 for length in lengths]
            axes.plot(lengths, appended, "^:", color="tab:orange", label="store.append")
            highest = max(highest, *appended)
        axes.set_xscale("log")
        axes.set_xticks(lengths, [f"{t:,}" for t in lengths])
        axes.minorticks_off()
        axes.set_ylim(bottom=0, top=highest * 1.15)
        axes.set_title(result.name + ("" if result.representative else " (test server)"))
        axes.grid(True, alpha=0.3)
    for axes in grid.flat[len(measured) :]:
        axes.set_visible(False)
    for axes in grid[:, 0]:
        axes.set_ylabel("ms per message (median)")
    for axes in grid[-1, :]:
        axes.set_xlabel("messages in the thread")
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.suptitle("W1: cost of adding one message against thread length")
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    figure.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=3, frameon=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


BASELINES = [
    "- SQL (asyncpg, aiosqlite, asyncmy directly, no SQLAlchemy): tables `bench_raw_threads` "
    "(index on `updated_at, id`), `bench_raw_messages` (one JSON text per message, primary key "
    "`thread_id, seq`) and `bench_raw_keys` (`kind, key, canonical JSON`, indexed). W1 is one "
    "`INSERT` plus one `UPDATE` in a transaction; reads are one query for the thread rows and "
    "one for their messages, each message decoded with `json.loads`; W5 appends lock the thread "
    "row (`SELECT ... FOR UPDATE`; SQLite `BEGIN IMMEDIATE`).",
    "- Redis: a hash per thread, a hash of message JSON plus a sorted set of message ids per "
    "thread, a sorted set by `updated_at`, a set per lookup key. W1 is `HSET`/`ZADD` plus the "
    "thread `HSET` in one `MULTI`; reads are one pipelined round trip per page; W5 appends are a "
    "Lua script.",
    "- Mongo: `bench_raw_threads` (with a `[{k, v}]` array under a multikey index) and "
    "`bench_raw_messages`; W1 is `insert_one` plus `update_one`.",
    "- Memory: dicts of JSON strings and a dict index.",
    "- Memory workload: the peak of `tracemalloc` while `get` loads the thread, against the peak "
    "of `[Message.model_validate(json.loads(doc)) for doc in documents]` over its messages' JSON.",
]


def _summary(results: Sequence[BackendResult]) -> list[str]:
    lines = ["| backend | targets met | targets missed | status |", "|---|---:|---:|---|"]
    for result in results:
        verdicts = [row.met for row in result.rows if row.met is not None]
        status = "measured" if result.status == "ok" else f"skipped: {result.status}"
        if result.name not in TARGETED and result.status == "ok":
            status += " (no targets set: informational)"
        failed = sum(1 for note in result.notes if " failed: " in note)
        if failed:
            status += f", {failed} workload(s) failed"
        lines.append(
            f"| {result.name} | {sum(verdicts)} | {len(verdicts) - sum(verdicts)} | {status} |"
        )
    return lines


def markdown(
    results: Sequence[BackendResult],
    *,
    command: str,
    plot: Path | None,
    quick: bool,
    load: str = "",
) -> str:
    """The whole report."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Performance",
        "",
        "Generated by `benchmarks/` (do not edit by hand). Every workload runs against "
        "tyler-threadstore and against a raw-driver baseline doing the minimal equivalent work "
        "on the same server in the same run, interleaved; times are medians of the repeats. "
        "Ratios are ours / baseline (for throughput, higher is better).",
        "",
        f"Run: {when}{' (--quick: tiny sizes, a smoke test, not a measurement)' if quick else ''}."
        " Reproduce with:",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Machine",
        "",
        *machine(results),
        *([f"- Load: {load}"] if load else []),
        "",
        "## Summary",
        "",
        *_summary(results),
        "",
        "## Baselines",
        "",
        *BASELINES,
        "",
    ]
    if plot is not None:
        out += ["## W1: per-save cost against thread length", "", f"![W1]({plot.name})", ""]
    for result in results:
        out += [f"## {result.name}", ""]
        if result.status != "ok":
            out += [f"Skipped: {result.status}", ""]
            continue
        if not result.representative:
            out += [f"> {MONGO_CAVEAT}", ""]
        if result.name == "memory":
            out += [f"> {MEMORY_NOTE}", ""]
        if result.name not in TARGETED:
            out += [f"> {UNTARGETED}", ""]
        out += [f"Server: {result.server}. URL: `{result.url}`. Took {result.seconds:.0f} s.", ""]
        out += [*table(result), ""]
        out += [f"- {note}" for note in result.notes]
        out.append("")
    return "\n".join(out).rstrip() + "\n"
