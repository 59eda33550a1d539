"""What the two import commands share: options, the errors file, the progress bar, exit codes."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from django.core.management.base import CommandError

from reactivation.imports.reading import UnusableFile

UNUSABLE_EXIT_STATUS = 2


def add_common_arguments(parser) -> None:
    parser.add_argument("path", help="CSV (UTF-8, UTF-8 with BOM, GB18030/GBK) or XLSX file.")
    parser.add_argument("--encoding", default="auto", help="Text encoding; 'auto' detects UTF-8 or GB18030/GBK.")
    parser.add_argument("--timezone", default="", help="Zone for dates without an offset (default TIME_ZONE).")
    parser.add_argument("--dry-run", action="store_true", help="Report what would happen; write nothing.")
    parser.add_argument(
        "--errors-out", default="",
        help="Where to write the CSV of rejected rows (default: <file>.errors.csv next to the input).",
    )


def default_errors_path(path: str) -> str:
    root, _ = os.path.splitext(path)
    return root + ".errors.csv"


@contextmanager
def errors_file(path: str):
    """Open the errors CSV (UTF-8 with BOM so Excel shows Chinese); delete it if the file was refused."""
    stream = open(path, "w", encoding="utf-8-sig", newline="")
    try:
        yield stream
    except BaseException:
        stream.close()
        try:
            os.remove(path)
        except OSError:
            pass
        raise
    stream.close()


@contextmanager
def progress_bar(stdout, description: str):
    """A tqdm bar on a terminal, nothing otherwise (logs and cron mail stay clean)."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc=description, unit=" rows", unit_scale=True, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def make_progress_callback(bar):
    if bar is None:
        return None

    def update(progress):
        if progress.estimated_total and bar.total is None:
            bar.total = max(progress.estimated_total, progress.rows)
        if bar.total is not None and progress.rows > bar.total:
            bar.total = progress.rows
        bar.update(progress.rows - bar.n)
        if progress.phase == "writing":
            bar.set_postfix_str("writing")

    return update


def unusable(exc: UnusableFile) -> CommandError:
    message = str(exc).replace("\n", " ")
    return CommandError(message, returncode=UNUSABLE_EXIT_STATUS)
