"""Pictures of a workflow: Mermaid and Graphviz text, and an SVG drawn here (no Graphviz).

An execution's stages are coloured by state.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from definitions import Transition, WorkflowDAG, WorkflowStage

__all__ = ["COLOURS", "to_dot", "to_mermaid", "to_svg"]

COLOURS: dict[str, str] = {
    "pending": "#ffffff",
    "running": "#9ecbff",
    "waiting": "#f9e2af",
    "retrying": "#fcd5b5",
    "completed": "#a6e3a1",
    "failed": "#f38ba8",
    "skipped": "#d0d0d0",
    "cancelled": "#fab387",
    "compensated": "#cba6f7",
    "compensation_failed": "#eb6f92",
}


def _label(transition: Transition) -> str:
    c = transition.condition
    if c is None:
        return ""
    return f"{c.stage + '.' if c.stage else ''}{c.path} {c.op} {c.value!r}"


#: A waiting stage's shape: mermaid brackets (open, close) and a DOT shape.
_SHAPES = {"agent": ("[", "]", "box"), "approval": ("{{", "}}", "hexagon"),
           "signal": (">", "]", "cds"), "timer": ("([", "])", "ellipse"),
           "workflow": ("[[", "]]", "box3d")}


def _subtitle(stage: WorkflowStage) -> str:
    if stage.kind == "workflow":
        return f"{stage.id} · workflow {stage.workflow}"
    return stage.id if stage.kind == "agent" else f"{stage.id} · {stage.kind}"


def to_mermaid(dag: WorkflowDAG, states: Mapping[str, str] | None = None) -> str:
    lines = ["flowchart TD"]
    for stage in dag.stages:
        name = stage.name.replace('"', "'")
        left, right, _ = _SHAPES[stage.kind]
        lines.append(f'    {stage.id}{left}"{name}<br/><small>{_subtitle(stage)}</small>"'
                     f'{right}')
    for t in dag.transitions:
        label = _label(t).replace('"', "'").replace("|", "/")
        arrow = f" -->|{label}| " if label else " --> "
        lines.append(f"    {t.from_stage}{arrow}{t.to_stage}")
    if states:
        for state, colour in COLOURS.items():
            lines.append(f"    classDef {state} fill:{colour},stroke:#333")
        for sid, state in states.items():
            lines.append(f"    class {sid} {state}")
    return "\n".join(lines) + "\n"


def to_dot(dag: WorkflowDAG, states: Mapping[str, str] | None = None) -> str:
    lines = [f'digraph "{dag.id}" {{', "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for stage in dag.stages:
        state = (states or {}).get(stage.id, "pending")
        label = f"{stage.name}\\n{_subtitle(stage)}" + (f"\\n[{state}]" if states else "")
        shape = _SHAPES[stage.kind][2]
        lines.append(f'  "{stage.id}" [label="{label}", shape={shape}, '
                     f'fillcolor="{COLOURS[state]}"];')
    for t in dag.transitions:
        label = _label(t).replace('"', "'")
        attrs = f' [label="{label}", style=dashed]' if label else ""
        lines.append(f'  "{t.from_stage}" -> "{t.to_stage}"{attrs};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _layers(dag: WorkflowDAG) -> list[list[str]]:
    depth: dict[str, int] = {}
    indegree = {s.id: 0 for s in dag.stages}
    for t in dag.transitions:
        if t.to_stage in indegree and t.from_stage in indegree:
            indegree[t.to_stage] += 1
    ready = [sid for sid, n in indegree.items() if n == 0]
    for sid in ready:
        depth[sid] = 0
    while ready:
        sid = ready.pop(0)
        for t in dag.outgoing(sid):
            if t.to_stage not in indegree:
                continue
            depth[t.to_stage] = max(depth.get(t.to_stage, 0), depth[sid] + 1)
            indegree[t.to_stage] -= 1
            if indegree[t.to_stage] == 0:
                ready.append(t.to_stage)
    for stage in dag.stages:  # a cycle (refused at registration) still draws
        depth.setdefault(stage.id, 0)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for stage in dag.stages:
        layers[depth[stage.id]].append(stage.id)
    return layers


def to_svg(dag: WorkflowDAG, states: Mapping[str, str] | None = None) -> str:
    """A layered drawing: one row per depth, arrows from each stage to the next."""
    box_w, box_h, gap_x, gap_y, pad = 220, 54, 40, 50, 20
    layers = _layers(dag)
    widest = max(len(layer) for layer in layers)
    width: float = pad * 2 + widest * box_w + (widest - 1) * gap_x
    legend_w = sum(24 + 7 * len(state) for state in COLOURS)
    label_w = max((7 * len(_label(t)) for t in dag.transitions), default=0)
    width = max(width, (legend_w + 2 * pad) if states else 0, width / 2 + box_w / 2 + label_w)
    height = pad * 2 + len(layers) * box_h + (len(layers) - 1) * gap_y + (30 if states else 0)
    pos: dict[str, tuple[float, float]] = {}
    for row, layer in enumerate(layers):
        span = len(layer) * box_w + (len(layer) - 1) * gap_x
        x0 = (width - span) / 2
        for col, sid in enumerate(layer):
            pos[sid] = (x0 + col * (box_w + gap_x), pad + row * (box_h + gap_y))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#444"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#fafafa"/>',
        f'<title>{html.escape(dag.id)}</title>',
    ]
    for t in dag.transitions:
        if t.from_stage not in pos or t.to_stage not in pos:
            continue
        (x1, y1), (x2, y2) = pos[t.from_stage], pos[t.to_stage]
        sx, sy, ex, ey = x1 + box_w / 2, y1 + box_h, x2 + box_w / 2, y2
        dash = ' stroke-dasharray="6 4"' if t.condition else ""
        out.append(f'<line x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" '
                   f'stroke="#444" stroke-width="1.5" marker-end="url(#arrow)"{dash}/>')
        if t.condition:
            out.append(f'<text x="{(sx + ex) / 2 + 4:.1f}" y="{(sy + ey) / 2:.1f}" '
                       f'font-size="10" fill="#555">{html.escape(_label(t))}</text>')
    for stage in dag.stages:
        x, y = pos[stage.id]
        state = (states or {}).get(stage.id, "pending")
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="9" '
                   f'fill="{COLOURS.get(state, "#ffffff")}" stroke="#333" '
                   f'stroke-width="1.2"/>')
        out.append(f'<text x="{x + box_w / 2:.1f}" y="{y + 22:.1f}" font-size="13" '
                   f'text-anchor="middle">{html.escape(stage.name[:30])}</text>')
        sub = stage.id + (f" · {state}" if states else "")
        out.append(f'<text x="{x + box_w / 2:.1f}" y="{y + 40:.1f}" font-size="10" '
                   f'text-anchor="middle" fill="#444">{html.escape(sub[:40])}</text>')
    if states:
        x = pad
        y = height - pad
        for state, colour in COLOURS.items():
            out.append(f'<rect x="{x}" y="{y - 10}" width="10" height="10" fill="{colour}" '
                       f'stroke="#333"/><text x="{x + 14}" y="{y}" font-size="10">{state}</text>')
            x += 24 + 7 * len(state)
    out.append("</svg>")
    return "\n".join(out) + "\n"
