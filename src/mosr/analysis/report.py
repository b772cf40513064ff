"""Markdown summary of a boundary analysis (analysis.md)."""

from __future__ import annotations


def _number(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}"


def _p_value(value) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _with_interval(value, interval) -> str:
    if value is None:
        return "–"
    if interval is None:
        return _number(value)
    return f"{_number(value)} [{_number(interval[0])}, {_number(interval[1])}]"


def layer_table(result: dict) -> str:
    """Return the per-layer Markdown table of an analysis result."""
    refusal_rows = {row["layer"]: row for row in (result.get("refusal") or {}).get("layers", [])}
    header = [
        "layer", "probe acc.", "pseudo called malicious",
        "median pos. benign", "median pos. pseudo", "median pos. malicious",
        "mean boundary benign", "mean boundary pseudo", "mean boundary malicious",
        "boundary AUROC pseudo>benign (p)", "boundary AUROC pseudo>malicious (p)", "claim holds",
    ]
    if refusal_rows:
        header += ["refusal AUROC: boundary", "refusal AUROC: position"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["layers"]:
        median, boundary = row["median_position"], row["mean_boundary"]
        cells = [
            str(row["layer"]),
            _number(row["probe_accuracy"]),
            _number(row["pseudo_called_malicious"]),
            _number(median["benign"]), _number(median["pseudo_malicious"]), _number(median["malicious"]),
            _number(boundary["benign"]), _number(boundary["pseudo_malicious"]), _number(boundary["malicious"]),
            f"{_number(row['boundary_auroc_vs_benign'])} ({_p_value(row['boundary_p_value_vs_benign'])})",
            f"{_number(row['boundary_auroc_vs_malicious'])} ({_p_value(row['boundary_p_value_vs_malicious'])})",
            _number(row["boundary_claim_holds"]),
        ]
        if refusal_rows:
            refusal = refusal_rows.get(row["layer"], {})
            cells += [
                _with_interval(refusal.get("boundary_auroc"), refusal.get("boundary_auroc_interval")),
                _with_interval(refusal.get("position_auroc"), refusal.get("position_auroc_interval")),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _benchmark_section(result: dict) -> list[str]:
    plot_layers = result["settings"]["plot_layers"]
    lines = [
        "## By source benchmark",
        "",
        "Median position of each benchmark's prompts at the plotted layers; for pseudo-malicious benchmarks, also the "
        "share the probe calls malicious. Benchmarks differ in style as well as in harmfulness, so compare within a style "
        "where you can.",
        "",
        "| group / benchmark | prompts | " + " | ".join(f"median pos. L{layer}" for layer in plot_layers)
        + " | " + " | ".join(f"called malicious L{layer}" for layer in plot_layers) + " |",
        "|" + "---|" * (2 + 2 * len(plot_layers)),
    ]
    for name, entry in result["by_benchmark"].items():
        columns = [entry["layers"].index(layer) for layer in plot_layers]
        positions = [_number(entry["median_position"][column]) for column in columns]
        called = [_number(entry["called_malicious"][column]) if "called_malicious" in entry else "–" for column in columns]
        lines.append(f"| {name} | {entry['count']} | " + " | ".join(positions) + " | " + " | ".join(called) + " |")
    return lines


def _first_token_section(first_token: dict) -> list[str]:
    lines = [
        "## First-token refusal score",
        "",
        "Log-odds that the first response token is one of the first tokens of common refusal openers "
        f"({', '.join(repr(token) for token in first_token['tokens'])}). Higher means the model leans towards "
        "opening with a refusal.",
        "",
        "| group | prompts | mean log-odds | median log-odds | share with log-odds > 0 |",
        "|---|---|---|---|---|",
    ]
    for group, row in first_token["groups"].items():
        lines.append(f"| {group} | {row['count']} | {_number(row['mean'])} | {_number(row['median'])} | "
                     f"{_number(row['share_positive'])} |")
    agreement = first_token.get("agreement")
    if agreement:
        lines += ["", "Agreement with the evaluation run's refusal verdicts (AUROC of the score for refused, "
                  "95% bootstrap interval):", "",
                  "| prompts | matched | refused | AUROC |", "|---|---|---|---|"]
        for group, row in agreement.items():
            lines.append(f"| {group} | {row['matched']} | {row['refused']} | "
                         f"{_with_interval(row['auroc'], row.get('auroc_interval'))} |")
    return lines


def render_markdown(result: dict) -> str:
    """Render analysis.md: settings, group sizes, the boundary verdict, the per-layer table, the first-token score and plots."""
    settings = result["settings"]
    model = result["model"]
    lines = [
        "# Hidden-state boundary analysis",
        "",
        f"Model: `{model.get('name')}`" + (f" with adapter `{model['adapter']}`" if model.get("adapter") else ""),
        f"Pooling: {settings['pooling']} ({'last prompt token' if settings['pooling'] == 'last' else 'mean over prompt tokens'}); "
        f"last layer {'after' if settings['final_norm'] else 'before'} the final norm; seed {settings['seed']}.",
        "",
        "| group | prompts | source |",
        "|---|---|---|",
    ]
    for group, info in result["groups"].items():
        lines.append(f"| {group} | {info['count']} | {info['source']} |")

    claim = result["boundary_claim"]
    holding = claim["layers_holding"]
    lines += [
        "",
        "## Boundary claim",
        "",
        "Position: 0 is the benign mean and 1 the malicious mean on the harmfulness direction (malicious mean minus "
        "benign mean). Benign and malicious positions are leave-one-out. Boundary score: max(0, 1 - |2 x position - 1|). "
        "The claim holds at a layer when the pseudo-malicious median position lies between the benign and malicious "
        "medians and pseudo-malicious boundary scores exceed both other groups' (one-sided Mann-Whitney U, p < 0.05, "
        "not corrected across layers).",
        "",
        f"The claim holds at {len(holding)} of {claim['layers_analyzed']} layers"
        + (f": {', '.join(str(layer) for layer in holding)}." if holding else "."),
        "",
        layer_table(result),
        "",
    ]

    if result.get("by_benchmark"):
        lines += _benchmark_section(result) + [""]

    refusal = result.get("refusal")
    if refusal is not None:
        lines += ["## Link to refusals", ""]
        if "skipped" in refusal:
            lines.append(f"Refusal AUROCs skipped: {refusal['skipped']}.")
        else:
            lines.append(
                f"{refusal['matched']} pseudo-malicious prompts matched the evaluation run, {refusal['refused']} of them "
                "refused. The last columns of the table give the AUROC of the boundary score and of the position for "
                "predicting which were refused (0.5 is chance), with 95% bootstrap intervals."
            )
        lines.append("")

    if result.get("first_token"):
        lines += _first_token_section(result["first_token"]) + [""]

    if result.get("plots"):
        lines += ["## Plots", ""]
        for name, file in result["plots"].items():
            lines.append(f"![{name}]({file})")
        lines.append("")
    return "\n".join(lines)
