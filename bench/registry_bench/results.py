"""What the phases measured: the table's rows, the goals, notes and commands, and their tables."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    bench: str
    ours: str
    nginx: str
    verdaccio: str
    r_nginx: str
    r_verdaccio: str


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    goals: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    aws_rows: list[tuple[str, str]] = field(default_factory=list)

    def section(self, title: str):
        self.rows.append(Row(f"**{title}**", "", "", "", "", ""))

    def goal(self, goal: str, target: str, measured: str, met: bool | None):
        self.goals.append((goal, target, measured, "—" if met is None else ("met" if met else "**not met**")))


def table(results: Results) -> str:
    out = [
        "| benchmark | ours | nginx (static) | Verdaccio | ours ÷ nginx | ours ÷ Verdaccio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results.rows:
        out.append(f"| {r.bench} | {r.ours} | {r.nginx} | {r.verdaccio} | {r.r_nginx} | {r.r_verdaccio} |")
    return "\n".join(out)


def goals_table(results: Results) -> str:
    out = ["| goal | target | measured | |", "|---|---|---|---|"]
    for g in results.goals:
        out.append("| " + " | ".join(g) + " |")
    return "\n".join(out)


def aws_table(results: Results) -> str:
    out = ["| ours on the AWS backend (moto DynamoDB + LocalStack S3 on this machine) | |", "|---|---:|"]
    for k, v in results.aws_rows:
        out.append(f"| {k} | {v} |")
    return "\n".join(out)
