"""The study report: one table of every method's rates, per-category breakdowns and a trade-off plot.

Input is a list of `ReportEntry`, one per evaluated model (the base model, each method, each
ablation and each sweep value), holding the `summary.json` written by `mosr evaluate`.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from mosr.metrics import format_rate

# Table columns: (heading, benchmark, rate name).
COLUMNS = [
    ("ASR HarmBench", "harmbench", "attack_success_rate"),
    ("ASR JailbreakBench", "jailbreakbench", "attack_success_rate"),
    ("ASR StrongREJECT", "strongreject", "attack_success_rate"),
    ("over-refusal XSTest", "xstest-safe", "over_refusal_rate"),
    ("over-refusal OKTest", "oktest", "over_refusal_rate"),
    ("refusal XSTest unsafe", "xstest-unsafe", "refusal_rate"),
    ("compliance harmless", "harmless", "compliance_rate"),
    ("incoherent harmless", "harmless", "incoherent_rate"),
]
OVER_REFUSAL_BENCHMARKS = ("xstest-safe", "oktest")
ATTACK_BENCHMARKS = ("harmbench", "jailbreakbench", "strongreject")


@dataclass
class ReportEntry:
    """One evaluated model: its name in the report, what it is, and its evaluation results."""

    name: str
    summary: dict
    group: str = "method"  # "base", "method", "ablation" or "sweep"
    run_dir: str | None = None
    training_time_s: float | None = None
    kl_to_base: float | None = None
    sweep: str | None = None  # the swept setting, for entries of a sweep
    sweep_value: object = None
    extra: dict = field(default_factory=dict)


def _metric(entry: ReportEntry, benchmark: str, rate: str) -> dict | None:
    return entry.summary.get("benchmarks", {}).get(benchmark, {}).get("rates", {}).get(rate)


def _present_columns(entries: list[ReportEntry]) -> list[tuple[str, str, str]]:
    """The columns that some entry has a value for; each attack on a benchmark follows its direct-request column."""
    attacked = sorted({name for entry in entries for name in entry.summary.get("benchmarks", {}) if "+" in name})
    columns = []
    for heading, benchmark, rate in COLUMNS:
        candidates = [(heading, benchmark, rate)]
        if rate == "attack_success_rate":
            candidates += [(f"{heading}, {name.partition('+')[2]}", name, rate)
                           for name in attacked if name.partition("+")[0] == benchmark]
        columns += [column for column in candidates if any(_metric(entry, column[1], rate) for entry in entries)]
    return columns


def _main_rows(entries: list[ReportEntry]) -> tuple[list[str], list[list[str]]]:
    columns = _present_columns(entries)
    headings = ["model", *[column[0] for column in columns], "KL to base (nats/token)", "training time"]
    rows = []
    for entry in entries:
        cells = [entry.name]
        for _, benchmark, rate in columns:
            metric = _metric(entry, benchmark, rate)
            cells.append(format_rate(metric) if metric else "–")
        cells.append("–" if entry.kl_to_base is None else f"{entry.kl_to_base:.4f}")
        cells.append("–" if entry.training_time_s is None else f"{entry.training_time_s / 60:.1f} min")
        rows.append(cells)
    return headings, rows


def _category_rows(entries: list[ReportEntry], benchmark: str, rate: str) -> tuple[list[str], list[list[str]]]:
    categories = sorted({
        category
        for entry in entries
        for category in entry.summary.get("benchmarks", {}).get(benchmark, {}).get("per_category", {})
    })
    rows = []
    for entry in entries:
        per_category = entry.summary.get("benchmarks", {}).get(benchmark, {}).get("per_category", {})
        cells = [entry.name]
        for category in categories:
            metric = per_category.get(category, {}).get(rate)
            cells.append("–" if not metric or metric["rate"] is None else f"{100 * metric['rate']:.0f}% ({metric['count']}/{metric['total']})")
        rows.append(cells)
    return ["model", *categories], rows


def _markdown_table(headings: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _html_table(headings: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>" for cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _breakdowns(entries: list[ReportEntry]) -> list[tuple[str, list[str], list[list[str]]]]:
    sections = []
    for title, benchmark, rate in [
        ("XSTest over-refusal per prompt type", "xstest-safe", "over_refusal_rate"),
        ("XSTest unsafe refusal per prompt type", "xstest-unsafe", "refusal_rate"),
        ("HarmBench attack success per category", "harmbench", "attack_success_rate"),
        ("JailbreakBench attack success per category", "jailbreakbench", "attack_success_rate"),
    ]:
        headings, rows = _category_rows(entries, benchmark, rate)
        if len(headings) > 1:
            sections.append((title, headings, rows))
    return sections


BENCHMARK_TITLES = {"xstest-safe": "XSTest safe prompts", "oktest": "OKTest", "harmbench": "HarmBench",
                    "jailbreakbench": "JailbreakBench", "strongreject": "StrongREJECT"}


def tradeoff_benchmarks(entries: list[ReportEntry]) -> tuple[str | None, str | None]:
    """Choose the benchmarks on the plot's axes: XSTest (else OKTest) over-refusal, HarmBench (else others) ASR.

    One pair for every entry, so that each point on the plot measures the same thing.
    """
    over_refusal = next((b for b in OVER_REFUSAL_BENCHMARKS
                         if any(_metric(entry, b, "over_refusal_rate") for entry in entries)), None)
    attack = next((b for b in ATTACK_BENCHMARKS if any(_metric(entry, b, "attack_success_rate") for entry in entries)),
                  None)
    return over_refusal, attack


def plot_tradeoff(entries: list[ReportEntry], path: Path) -> Path | None:
    """Plot attack success rate against over-refusal rate, one point per model, sweeps joined by lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_benchmark, y_benchmark = tradeoff_benchmarks(entries)
    if x_benchmark is None or y_benchmark is None:
        return None
    points = [(entry, _metric(entry, x_benchmark, "over_refusal_rate"), _metric(entry, y_benchmark, "attack_success_rate"))
              for entry in entries]
    points = [(entry, x, y) for entry, x, y in points if x and y and x["rate"] is not None and y["rate"] is not None]
    if not points:
        return None

    figure, axes = plt.subplots(figsize=(7, 5.5))
    markers = {"base": "s", "method": "o", "ablation": "^", "sweep": "."}
    for entry, x, y in points:
        axes.errorbar(
            100 * x["rate"], 100 * y["rate"],
            xerr=[[100 * (x["rate"] - x["ci_low"])], [100 * (x["ci_high"] - x["rate"])]],
            yerr=[[100 * (y["rate"] - y["ci_low"])], [100 * (y["ci_high"] - y["rate"])]],
            fmt=markers.get(entry.group, "o"), capsize=3, markersize=7, alpha=0.85, label=entry.name,
        )
    sweeps = sorted({entry.sweep for entry, _, _ in points if entry.sweep})
    for sweep in sweeps:
        members = [(entry, x, y) for entry, x, y in points if entry.sweep == sweep]
        members.sort(key=lambda item: float(item[0].sweep_value))
        axes.plot([100 * x["rate"] for _, x, _ in members], [100 * y["rate"] for _, _, y in members],
                  linestyle="--", color="grey", linewidth=1)
        for entry, x, y in members:
            axes.annotate(f"{sweep}={entry.sweep_value}", (100 * x["rate"], 100 * y["rate"]), fontsize=7,
                          xytext=(4, 4), textcoords="offset points")

    axes.set_xlabel(f"over-refusal rate on {BENCHMARK_TITLES[x_benchmark]} (%)")
    axes.set_ylabel(f"attack success rate on {BENCHMARK_TITLES[y_benchmark]}, direct request (%)")
    axes.set_title("Safety against over-refusal (lower left is better; bars: 95% bootstrap CI)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


# Below this many prompts per benchmark, the report warns that differences between models are mostly noise.
SMALL_SAMPLE = 100


def small_sample_caution(entries: list[ReportEntry]) -> str | None:
    """Return a warning when the table's benchmarks are small, with the widest interval it shows."""
    columns = _present_columns(entries)
    metrics = [metric for entry in entries for _, benchmark, rate in columns
               if (metric := _metric(entry, benchmark, rate)) and metric["rate"] is not None]
    if not metrics:
        return None
    fewest = min(metric["total"] for metric in metrics)
    if fewest >= SMALL_SAMPLE:
        return None
    widest = max(100 * (metric["ci_high"] - metric["ci_low"]) for metric in metrics)
    return (f"Few prompts per benchmark (as few as {fewest}): intervals are up to {widest:.0f} points wide, "
            f"so this table shows that the pipeline runs, not which method is best.")


def write_report(entries: list[ReportEntry], output_dir: str | Path, *, title: str = "mosr study") -> dict:
    """Write report.md, report.html and tradeoff.png into `output_dir`; return their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_tradeoff(entries, output_dir / "tradeoff.png")
    headings, rows = _main_rows(entries)
    breakdowns = _breakdowns(entries)
    # Relative to the report, so that the links still work when the run folder is moved or published.
    links = [(entry.name, os.path.relpath(Path(entry.run_dir) / "samples", output_dir))
             for entry in entries if entry.run_dir]

    intro = "Rates: value (count/total) [95% bootstrap interval]."
    caution = small_sample_caution(entries)
    if caution:
        intro += " " + caution
    markdown = [f"# {title}", "", intro, "", _markdown_table(headings, rows), ""]
    if plot:
        markdown += [f"![trade-off plot]({plot.name})", ""]
    for section_title, section_headings, section_rows in breakdowns:
        markdown += [f"## {section_title}", "", _markdown_table(section_headings, section_rows), ""]
    if links:
        markdown += ["## Per-sample results", ""]
        markdown += [f"- [{name}]({samples}/)" for name, samples in links]
    (output_dir / "report.md").write_text("\n".join(markdown) + "\n", encoding="utf-8")

    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f3f3f3}</style></head><body>",
            f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
            _html_table(headings, rows)]
    if plot:
        page.append(f"<img src='{plot.name}' alt='trade-off plot' style='max-width:700px'>")
    for section_title, section_headings, section_rows in breakdowns:
        page += [f"<h2>{html.escape(section_title)}</h2>", _html_table(section_headings, section_rows)]
    if links:
        page.append("<h2>Per-sample results</h2><ul>")
        page += [f"<li><a href='{html.escape(samples)}/'>{html.escape(name)}</a></li>" for name, samples in links]
        page.append("</ul>")
    page.append("</body></html>")
    (output_dir / "report.html").write_text("\n".join(page), encoding="utf-8")

    return {"markdown": output_dir / "report.md", "html": output_dir / "report.html", "plot": plot}
