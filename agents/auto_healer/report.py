"""Reports of outcomes for people and machines: text, JSON and Markdown.

A dry-run report is the plan a reviewer reads: the playbook, the files that would be deleted or
rewritten (count and a capped list), the formatter's diff, the commit message, and what would be
escalated.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from auto_healer.outcomes import Kind, Outcome
from auto_healer.terminal import shown

Format = Literal["text", "json", "markdown"]
FILES_SHOWN = 20
DIFF_LINES_SHOWN = 200

_LABEL = {
    Kind.HEALED: "HEALED",
    Kind.PLANNED: "WOULD HEAL",
    Kind.SKIPPED: "SKIPPED",
    Kind.ESCALATED: "ESCALATED",
    Kind.FAILED: "FAILED",
    Kind.REJECTED: "REJECTED",
    Kind.HELD: "HELD",
}


def label(kind: Kind) -> str:
    """How reports name an outcome kind (`WOULD HEAL` for planned)."""
    return _LABEL[kind]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(text: str) -> str:
    """Lone surrogates (legal JSON escapes, not encodable text) written back as `\\udXXX`:
    valid inside JSON strings and printable on any terminal."""
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def outcome_dict(outcome: Outcome, escalation: str | None = None) -> dict[str, Any]:
    """The JSON-ready form of one outcome (also the metadata of outcome events); `escalation`
    is what the decision told a human (trigger, resolve or none), when known."""
    injury = outcome.injury
    return {
        "injury_id": outcome.injury_id,
        "outcome": outcome.kind.value,
        "reason": outcome.reason,
        "playbook": outcome.playbook,
        "injury": injury.raw if injury else None,
        "raw": outcome.raw.decode(errors="replace")[:2000] if outcome.raw is not None else None,
        "steps": [
            {
                "action": s.action,
                "summary": s.summary,
                "file_count": len(s.files),
                "files": [{"path": f.path, "change": f.change} for f in s.files[:FILES_SHOWN]],
                "diff": _cap_diff(s.diff),
            }
            for s in outcome.steps
        ],
        "commit": outcome.commit,
        "branch": outcome.branch,
        "commit_message": outcome.commit_message,
        "dry_run": outcome.dry_run,
        "verified": outcome.verified,
        "attempts": outcome.attempts,
        **({"escalation": escalation} if escalation is not None else {}),
    }


def summary(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts = Counter(o.kind.value for o in outcomes)
    return {k.value: counts.get(k.value, 0) for k in Kind}


def render(
    outcomes: Sequence[Outcome],
    fmt: Format,
    *,
    escalations_to: str,
    pages: Sequence[dict[str, Any]] | None = None,
    escalations: Sequence[str] | None = None,
) -> str:
    """Render a whole run; `escalations_to` says where escalations went, `pages` (dry-run) the
    requests the pager would have sent, secrets redacted, `escalations` each outcome's page."""
    if fmt == "json":
        told = list(escalations) if escalations is not None else [None] * len(outcomes)
        doc = {
            "summary": summary(outcomes),
            "escalations_to": escalations_to,
            "outcomes": [outcome_dict(o, e) for o, e in zip(outcomes, told, strict=True)],
        }
        if pages is not None:
            doc["pages"] = list(pages)
        return escape_surrogates(json.dumps(doc, indent=2, ensure_ascii=False))
    if fmt == "markdown":
        return escape_surrogates(_markdown(outcomes, escalations_to) + _pages(pages, "markdown"))
    return escape_surrogates(_text(outcomes, escalations_to) + _pages(pages, "text"))


def _pages(pages: Sequence[dict[str, Any]] | None, fmt: Format) -> str:
    """The planned pager requests of a dry-run, as indented JSON."""
    if not pages:
        return ""
    doc = json.dumps(list(pages), indent=2, ensure_ascii=False)
    if fmt == "markdown":
        return f"\nPages that would be sent (dry-run):\n\n```json\n{doc}\n```\n"
    return "\npages that would be sent (dry-run, not sent):\n" + "\n".join(
        shown(line) for line in doc.splitlines()
    )


def _cap_diff(diff: str) -> str:
    lines = diff.splitlines(keepends=True)
    if len(lines) <= DIFF_LINES_SHOWN:
        return diff
    return "".join(lines[:DIFF_LINES_SHOWN]) + f"... ({len(lines) - DIFF_LINES_SHOWN} more lines)\n"


def _title(o: Outcome) -> str:
    if o.injury is None:
        return "(unparseable payload)"
    return f"{o.injury.injury.injury_type} at {o.injury.injury.affected_path}"


def _files(o: Outcome) -> list[str]:
    files = o.files
    listed = [f"{f.change} {f.path}" for f in files[:FILES_SHOWN]]
    if len(files) > FILES_SHOWN:
        listed.append(f"... and {len(files) - FILES_SHOWN} more")
    return listed


def _text(outcomes: Sequence[Outcome], escalations_to: str) -> str:
    """The summary paragraph first (what a person reads), then each outcome's details."""
    counts = summary(outcomes)
    head = [", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no injuries"]
    if counts["escalated"] or counts["failed"] or counts["rejected"]:
        head.append(f"escalations: {escalations_to}")
    out: list[str] = []
    for o in outcomes:
        out.append(f"{_LABEL[o.kind]:<10} {_title(o)}  [{o.injury_id or '-'}]")
        if o.playbook:
            out.append(f"           playbook: {o.playbook}")
        out.append(f"           {o.reason}")
        if o.verified is not None:
            out.append(f"           verified on the remote: {'yes' if o.verified else 'NO'}")
        for step in o.steps:
            out.append(f"           step {step.action}: {step.summary}")
        files = _files(o)
        if files:
            out.append(f"           files ({len(o.files)}):")
            out.extend(f"             {line}" for line in files)
        for step in o.steps:
            if step.diff:
                out.extend(f"             {line}" for line in _cap_diff(step.diff).splitlines())
        if o.commit_message and o.kind is Kind.PLANNED:
            out.append("           commit message:")
            out.extend(f"             {line}" for line in o.commit_message.splitlines())
    # a publisher's path or reason may hold escape sequences or a newline forging a line
    out = [shown(line) for line in out]
    return "\n".join([*head, "", *out] if out else head)


def _markdown(outcomes: Sequence[Outcome], escalations_to: str) -> str:
    counts = summary(outcomes)
    dry = any(o.dry_run for o in outcomes)
    out = [f"## auto-healer {'plan (dry-run)' if dry else 'report'}", ""]
    out.append(" · ".join(f"**{n}** {k}" for k, n in counts.items() if n) or "No injuries.")
    out += ["", "| outcome | injury | playbook | reason |", "|---|---|---|---|"]
    for o in outcomes:
        reason = o.reason.replace("|", "\\|").replace("\n", " ")
        title = _title(o).replace("|", "\\|")
        out.append(f"| {_LABEL[o.kind]} | `{title}` | {o.playbook or '—'} | {reason} |")
    for o in outcomes:
        if not o.steps and not o.commit_message:
            continue
        out += ["", f"### {_LABEL[o.kind].lower()}: `{_title(o)}`", ""]
        out += [f"- **{s.action}**: {s.summary}" for s in o.steps]
        files = _files(o)
        if files:
            out += ["", "<details><summary>files</summary>", "", "```", *files, "```", "</details>"]
        for s in o.steps:
            if s.diff:
                out += ["", "```diff", _cap_diff(s.diff).rstrip("\n"), "```"]
        if o.commit_message:
            out += ["", "Commit message:", "", "```", o.commit_message.strip(), "```"]
    if counts["escalated"] or counts["failed"] or counts["rejected"]:
        out += ["", f"Escalations: {escalations_to}"]
    return "\n".join(out) + "\n"
