"""MkDocs hook: publish the study write-ups and the benchmarks page, which live beside their results.

``reports/<study>/`` and ``benchmarks/README.md`` sit outside ``docs/`` so that each write-up stays
next to the tables and plots its scripts regenerate. This hook adds them to the site at the same
relative paths (``reports/cifar10/README.md`` -> ``<site>/reports/cifar10/``), and rewrites each
relative Markdown link that is correct in the repository (``docs/index.md`` ->
``../reports/cifar10/README.md``) into the link that is correct in the site, so one set of
links works on a Git host and passes ``mkdocs build --strict``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO_FILES = ("reports/*/*.md", "reports/*/*.png", "benchmarks/README.md", "benchmarks/*.png")
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\s+\"[^\"]*\")?\)")


def _root(config) -> Path:
    return Path(config.config_file_path).parent


def on_files(files: Files, config) -> Files:
    root = _root(config)
    for pattern in REPO_FILES:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if files.get_file_from_path(rel) is None:
                files.append(File(rel, src_dir=str(root), dest_dir=config.site_dir,
                                  use_directory_urls=config.use_directory_urls))
    return files


def _real_path(file: File, config) -> str | None:
    """Where the file is in the repository, relative to its root (None: a theme file, generated)."""
    if not file.abs_src_path:
        return None
    path, root = Path(file.abs_src_path).resolve(), _root(config).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    site_uri = {real: f.src_uri for f in files if (real := _real_path(f, config))}
    real_dir = posixpath.dirname(_real_path(page.file, config))
    site_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        uri = site_uri.get(posixpath.normpath(posixpath.join(real_dir, target)))
        if uri is None:
            return match.group(0)  # not a site file: MkDocs reports it under --strict
        new = posixpath.relpath(uri, site_dir or ".")
        return f"{match.group(1)}{new}{match.group(3) or ''}{match.group(4) or ''})"

    return LINK.sub(rewrite, markdown)
