"""Pages made while mkdocs builds (the mkdocs-gen-files plugin runs this file).

- ``examples/``: one page per ``examples/*.py`` script in the repository, titled by the first line
  of its module docstring, with the rest of the docstring as text and the script's code below; an
  index page lists them (mkdocs-literate-nav puts the index first, then the pages by file name).
- ``changelog.md``: the repository's ``CHANGELOG.md``.

Whatever scripts exist at build time appear; nothing is listed by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]


def describe(script: Path) -> tuple[str, str, str]:
    """The title, the text after it, and the code without the docstring, of one example script."""
    source = script.read_text(encoding="utf-8")
    module = ast.parse(source)
    doc = ast.get_docstring(module) or script.stem.replace("_", " ")
    title, _, text = doc.partition("\n")
    code = source
    first = module.body[0] if module.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        code = "\n".join(source.splitlines()[first.end_lineno :]).lstrip("\n")
    return title.strip().rstrip("."), text.strip(), code


def rst_to_markdown(text: str) -> str:
    """The reStructuredText a docstring uses, as Markdown: ``literal`` and ``::`` code blocks."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()[:-2].rstrip()
            out.append(stripped + (":" if stripped and not stripped.endswith(":") else ""))
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            body = [b[4:] if b.startswith("    ") else b.strip() for b in block]
            while body and not body[0].strip():
                body.pop(0)
            while body and not body[-1].strip():
                body.pop()
            out += ["", "```bash", *body, "```", ""]
            continue
        out.append(line.replace("``", "`"))
        i += 1
    return "\n".join(out)


scripts = sorted((ROOT / "examples").glob("*.py"))
rows: list[str] = []
for script in scripts:
    title, text, code = describe(script)
    page = f"{script.stem}.md"
    with mkdocs_gen_files.open(f"examples/{page}", "w") as f:
        f.write(f"# {title}\n\n{rst_to_markdown(text)}\n\n")
        f.write(f"Source: `examples/{script.name}`\n\n```python\n{code}\n```\n")
    mkdocs_gen_files.set_edit_path(f"examples/{page}", f"../examples/{script.name}")
    rows.append(f"- [{title}]({page}): `examples/{script.name}`")

with mkdocs_gen_files.open("examples/index.md", "w") as f:
    f.write(
        "# Examples\n\nScripts in the repository's `examples/` folder; each runs as it is "
        "(`python examples/NAME.py`, see its page for arguments) and CI runs them.\n\n"
    )
    f.write("\n".join(rows) if rows else "No example scripts yet.")
    f.write("\n")

with mkdocs_gen_files.open("changelog.md", "w") as f:
    f.write((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
mkdocs_gen_files.set_edit_path("changelog.md", "../CHANGELOG.md")
