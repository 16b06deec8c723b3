#!/usr/bin/env python3
"""Rewrite the inputs/outputs tables of terraform/<module>/README.md from variables.tf and outputs.tf.

The tables live between ``<!-- BEGIN_TF_DOCS -->`` and ``<!-- END_TF_DOCS -->``. ``--check`` exits 1 when a README
is out of date (tests/integration/test_terraform_modules.py runs it). Needs python-hcl2.

    python scripts/terraform-readme.py terraform/aws terraform/alicloud [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import hcl2

BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return _unquote(value)


def _load(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        doc: dict[str, Any] = _clean(hcl2.load(fh))
    return doc


def _cell(text: str) -> str:
    text = re.sub(r"^<<-?(\w+)\s*(.*?)\s*\1$", r"\2", str(text).strip(), flags=re.S)  # heredoc
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace("|", "\\|")


def _type(value: Any) -> str:
    text = str(value or "any")
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    return f"`{_cell(text)}`"


def _default(body: dict[str, Any]) -> str:
    if "default" not in body:
        return "**required**"
    value = body["default"]
    if value is None:
        return "`null`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k} = {v}" for k, v in value.items()) + "}`"
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def tables(module: Path) -> str:
    inputs = ["| Name | Description | Type | Default |", "|------|-------------|------|---------|"]
    for block in _load(module / "variables.tf").get("variable", []):
        for name, body in block.items():
            inputs.append(
                f"| `{name}` | {_cell(body.get('description', ''))} | {_type(body.get('type'))} | {_default(body)} |"
            )
    outputs = ["| Name | Description |", "|------|-------------|"]
    for block in _load(module / "outputs.tf").get("output", []):
        for name, body in block.items():
            outputs.append(f"| `{name}` | {_cell(body.get('description', ''))} |")
    return "\n".join(["## Inputs", "", *inputs, "", "## Outputs", "", *outputs])


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for arg in [a for a in argv if not a.startswith("--")]:
        module = Path(arg)
        readme = module / "README.md"
        text = readme.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        new = text[:start] + "\n" + tables(module) + "\n" + text[end:]
        if new != text:
            stale.append(str(readme))
            if not check:
                readme.write_text(new)
    if check and stale:
        print("out of date (run scripts/terraform-readme.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
