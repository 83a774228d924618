"""MkDocs hook: serve the result plots from `results/` under `figures/` without copying them.

The plots belong to the results files that produced them (each beside its `.md` and `.json`), so
the docs link to `figures/<path under results/>` and this hook adds exactly the files the pages
name. A page that names a plot that does not exist keeps a broken link, which `mkdocs build
--strict` turns into a failure: a stale figure cannot slip through.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

FIGURE_LINK = re.compile(r"figures/([\w./-]+\.(?:png|svg|jpg))")


def on_files(files: Files, config: Any) -> Files:
    docs_dir = Path(config["docs_dir"])
    results_dir = docs_dir.parent / "results"
    named: set[str] = set()
    for page in docs_dir.rglob("*.md"):
        named.update(FIGURE_LINK.findall(page.read_text(encoding="utf-8")))
    for rel in sorted(named):
        source = results_dir / rel
        if source.is_file() and (results_dir.resolve() in source.resolve().parents):
            files.append(File.generated(config, f"figures/{rel}", abs_src_path=str(source)))
    return files
