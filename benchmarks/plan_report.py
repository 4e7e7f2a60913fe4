"""The plan bench's report: a table of the methods of each task set, the search budgets' table and plot, the
Markdown it writes, and DeltaWorld's token cost set against the baselines and DINOWorld (`comparisons`)."""

from __future__ import annotations

from pathlib import Path


def table(methods: dict[str, dict]) -> str:
    lines = [
        "| method | success rate | 95 % interval (Wilson) | mean final distance (tolerances) | seconds / env step | "
        "GFLOP / planning step |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in methods.items():
        low, high = row["success_ci95"]
        lines.append(
            f"| {name} | {row['success_rate']:.2f} | {low:.2f}-{high:.2f} | {row['mean_final_distance']:.3f} | "
            f"{row['seconds_per_step']:.4f} | {row['flops_per_planning_step'] / 1e9:,.2f} |"
        )
    return "\n".join(lines)


def budget_table(rows: list[dict]) -> str:
    lines = [
        "| method | candidates x iterations / elites | success rate | 95 % interval | seconds / env step |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        budget = f"{row['candidates']} x {row['iterations']} / {row['elites']}"
        if row.get("skipped"):
            lines.append(
                f"| {row['method']} | {budget} | not run: estimated {row['estimated_seconds'] / 60:.0f} min | - | - |"
            )
            continue
        low, high = row["success_ci95"]
        lines.append(
            f"| {row['method']} | {budget} | {row['success_rate']:.2f} | {low:.2f}-{high:.2f} | "
            f"{row['seconds_per_step']:.4f} |"
        )
    return "\n".join(lines)


def success_text(protocol: dict) -> str:
    parts = [
        f"within {t['tolerance']:g} over entries {t['dims'] or 'all'} (scaled by {t['scale'] or 1}, "
        f"angles {t['angles'] or 'none'})"
        for t in protocol["success"]
    ]
    return " and ".join(parts)


def markdown(report: dict, task_sets: dict[str, dict]) -> str:
    protocol = report["protocol"]
    planner = report["planner"]
    lines = [
        f"# Goal reaching in {report['env']}",
        "",
        f"Tasks from held-out recorded episodes ({report['record']['policy']} policy): start state reached by "
        f"replaying the recorded actions from the recorded seed, goal = the recorded frame {protocol['goal_offset']} "
        f"env steps later; budget {protocol['budget']} env steps; success = the env's state "
        f"{success_text(protocol)} of the goal state; distances in tolerances (1 = at the edge of the worst test). "
        f"Actions in blocks of {report['action_repeat']} env steps. "
        f"Every planner: {planner['horizon']} blocks, {planner['candidates']} candidates x {planner['iterations']} "
        f"iterations ({planner['elites']} CEM elites), scored on "
        f"{'the last imagined step' if planner['cost_steps'] == 'last' else 'every imagined step'}, "
        f"{planner['steps_applied']} blocks applied before planning again, {planner['context']} context frames.",
        "",
    ]
    for name, rows in task_sets.items():
        draw = rows["draw"]
        lines += [f"## Task set `{name}`: {rows['tasks']} tasks", ""]
        if name == "needs_acting":
            lines += [
                f"Of {draw['considered']} candidate tasks, left out: {draw['left_out']} (state entries that must "
                f"change: {protocol['must_change'] or 'none named'}).",
                "",
            ]
        lines += [table(rows["methods"]), ""]
    if report["budgets"]:
        lines += [
            f"## Search budgets on `{report['budget_task_set']}`",
            "",
            budget_table(report["budgets"]),
            "",
            f"![success against seconds per env step]({Path(report['budget_plot']).name})",
            "",
        ]
    lines += [
        f"Wall time {report['total_seconds'] / 60:.1f} min ({report['prepare_seconds'] / 60:.1f} preparing); "
        f"{report['machine']}.",
        "",
    ]
    return "\n".join(lines)


def plot_budgets(rows: list[dict], path: Path, title: str) -> None:
    """Success (with 95 % intervals) against seconds per env step, log x, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        run = sorted(
            (r for r in rows if r["method"] == method and not r.get("skipped")), key=lambda r: r["seconds_per_step"]
        )
        x = [r["seconds_per_step"] for r in run]
        y = [r["success_rate"] for r in run]
        errors = [
            [r["success_rate"] - r["success_ci95"][0] for r in run],
            [r["success_ci95"][1] - r["success_rate"] for r in run],
        ]
        axes.errorbar(x, y, yerr=errors, marker="o", capsize=3, label=method)
        for r in run:
            axes.annotate(
                f"{r['candidates']}x{r['iterations']}",
                (r["seconds_per_step"], r["success_rate"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    axes.set_xscale("log")
    axes.set_ylim(0, 1)
    axes.set_xlabel("seconds per env step (log)")
    axes.set_ylabel("success rate (95 % interval)")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def comparisons(methods: dict[str, dict]) -> dict[str, float]:
    if not {"deltaworld_token_cem", "random", "dinoworld_cem", "zero_action"} <= set(methods):
        return {}
    delta = methods["deltaworld_token_cem"]
    return {
        "deltaworld_token_success_over_random_points": 100
        * (delta["success_rate"] - methods["random"]["success_rate"]),
        "deltaworld_token_success_over_zero_action_points": 100
        * (delta["success_rate"] - methods["zero_action"]["success_rate"]),
        "deltaworld_token_success_over_dinoworld_points": 100
        * (delta["success_rate"] - methods["dinoworld_cem"]["success_rate"]),
        "dinoworld_over_deltaworld_token_seconds_per_step": methods["dinoworld_cem"]["seconds_per_step"]
        / max(delta["seconds_per_step"], 1e-12),
    }
