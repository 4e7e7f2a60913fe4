"""`make bench`'s report: its targets, each a value against a bound (`targets`), and the Markdown it writes and
prints (`markdown`): the machine, the targets, every measurement, the planning table and the tokenizer step's
operator profile."""

from __future__ import annotations

from tokenizer.runtime.config import flatten


def target(name: str, value: float, bound: float, at_most: bool) -> dict:
    return {
        "name": name,
        "value": value,
        "target": f"{'<=' if at_most else '>='} {bound:g}",
        "met": bool(value <= bound if at_most else value >= bound),
    }


def targets(report: dict) -> list[dict]:
    return [
        # The predictor should cost at most 5% of decoding an imagined frame at the paper's size.
        target(
            "predictor_over_decode_flops_vitb_512",
            report["flop_ratios"]["vitb_512"]["predictor_over_decode"],
            0.05,
            at_most=True,
        ),
        target("bom256_over_bom1_step_time", report["bom256_over_bom1_step_time"], 2.0, at_most=True),
        target("mfu_train_tokenizer_tiny", report["mfu_train_tokenizer_tiny"], 0.5, at_most=False),
        # At a size where planning is FLOP-bound, the token cost plans at least 50x faster than DINOWorld
        # (LeWM reports up to 48x over DINO-WM).
        target(
            f"dinoworld_over_deltaworld_token_planning_step_{report['settings']['planning_scale']}",
            report[f"planning_{report['settings']['planning_scale']}"]["time_ratios"][
                "dinoworld_over_deltaworld_token"
            ],
            50.0,
            at_most=False,
        ),
        # Training on a token cache skips the frozen tokenizer: at least 5x the clips/s of tokenizing every step.
        target(
            "world_model_cached_over_on_the_fly_speedup",
            report["world_model_training"]["cached_over_on_the_fly_speedup"],
            5.0,
            at_most=False,
        ),
    ]


def show(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(show(item) for item in value) or "none"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


SEARCH_LABELS = {
    "deltaworld_token": "DeltaWorld, token cost (readout, nothing decoded)",
    "deltaworld_feature": "DeltaWorld, feature cost (every imagined step decoded)",
    "dinoworld": "DINOWorld (every patch predicted)",
}


def scale_planning_table(section: dict) -> list[str]:
    """`scale_planning`'s figures, one row per method."""
    cfg, planner = section["settings"], section["settings"]["planner"]
    dino = section["seconds_per_planning_step"]["dinoworld"]
    return [
        f"CEM planning step at {cfg['scale']} ({cfg['frame_size']} px, {cfg['patches']} patches, width "
        f"{cfg['width']}; {planner['candidates']} candidates x {planner['horizon']} steps x {planner['iterations']} "
        f"iterations; {cfg['device']}, {cfg['dtype']}; {cfg['timed']}; repeats "
        f"{', '.join(f'{k} {v}' for k, v in cfg['repeats'].items())}):",
        "",
        "| method | s per planning step | DINOWorld / method | GFLOP per planning step | achieved GFLOP/s | s per "
        "env step (with observing) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {SEARCH_LABELS[name]} | {seconds:.4g} | {dino / seconds:.3g}x | "
            f"{section['flops_per_planning_step'][name] / 1e9:,.1f} | "
            f"{section['achieved_gflops'][name]:.3g} | {section['seconds_per_env_step'][name]:.4g} |"
            for name, seconds in section["seconds_per_planning_step"].items()
        ),
        "",
        "Observing (taking in the new frame, the context's tokens kept; restarting from every context frame): "
        + "; ".join(
            f"{name} {section['seconds_to_observe'][name]:.4g} s, "
            f"{section['flops_to_observe'][name] / 1e9:,.1f} GFLOP (restarting "
            f"{section['seconds_to_observe_restarting'][name]:.4g} s, "
            f"{section['flops_to_observe_restarting'][name] / 1e9:,.1f} GFLOP)"
            for name in section["seconds_to_observe"]
        ),
    ]


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        "# DeltaWorld benchmark" + (" (--quick: timings are not meaningful)" if report["quick"] else ""),
        "",
        f"{machine['device']} | {machine['cpu_model']}, {machine['usable_cores']} of {machine['cores']} cores, "
        f"{machine['threads']} torch threads | torch {machine['torch']}, python {machine['python']}, accelerate "
        f"{machine['accelerate']} | load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])} | {report['seconds']:.0f} s",
        "",
        *(
            [
                f"**Other processes took CPU during {', '.join(report['disturbed_phases'])}: those timings are "
                "disturbed (see phases.*.other_processes_cpu_share).**",
                "",
            ]
            if report["disturbed_phases"]
            else []
        ),
        "| target | value | target | met |",
        "| --- | --- | --- | --- |",
        *(
            f"| {t['name']} | {show(t['value'])} | {t['target']} | {'yes' if t['met'] else 'NO'} |"
            for t in report["targets"]
        ),
        "",
        "| measurement | value |",
        "| --- | --- |",
    ]
    skip = ("machine", "targets", "quick", "seconds")
    lines += [
        f"| {key} | {show(value)} |"
        for key, value in flatten({k: v for k, v in report.items() if k not in skip}).items()
        if not key.endswith("top_ops")
    ]
    lines += ["", *scale_planning_table(report[f"planning_{report['settings']['planning_scale']}"])]
    ops = report["train_tokenizer_tiny"]["top_ops"]
    lines += [
        "",
        f"Tokenizer training step, top {len(ops)} operators by self time:",
        "",
        "| operator | ms per step | share | calls per step |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {op['op']} | {op['ms_per_step']:.2f} | {op['share']:.1%} | {op['calls_per_step']:g} |" for op in ops),
    ]
    return "\n".join(lines) + "\n"
