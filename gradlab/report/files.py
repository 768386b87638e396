"""Which files of a run folder a study report may read: regular files inside the run folder.
A file that is a symlink out of its run folder (a ``config.yaml`` linked to a YAML file
elsewhere, a ``meta.json`` linked to ``~/.ssh/config``) or that is not a regular file (a
FIFO, a device, a folder) is never read into the report, which is meant to be shared; the
report says which files it left out instead. A symlink to another file of the same run
folder is read, and so is a run folder that is itself reached through a link.
"""

from __future__ import annotations

import os
from pathlib import Path

from gradlab.runlog import (
    ALERTS_FILE,
    CONFIG_FILE,
    EVALS_FILE,
    GRADS_FILE,
    META_FILE,
    STEPS_FILE,
    SUMMARY_FILE,
)
from gradlab.study.plots import outside_run_folder

REPORTED = (CONFIG_FILE, META_FILE, SUMMARY_FILE, STEPS_FILE, EVALS_FILE, GRADS_FILE, ALERTS_FILE)
"""The files of a run folder that go into a report (summary.json: through the table)."""
OUTSIDE = "a symlink out of the run folder"
NOT_REGULAR = "not a regular file"


def refused_files(run: str | Path) -> dict[str, str]:
    """The files of :data:`REPORTED` in the run folder ``run`` that the report must not read,
    each with why (:data:`OUTSIDE` or :data:`NOT_REGULAR`). Missing files are not listed
    (the parts that need them say they are missing)."""
    refused: dict[str, str] = {}
    try:
        entries = list(os.scandir(run))
    except OSError:  # the folder is gone or unreadable: every reader says so
        return refused
    for entry in entries:
        if entry.name not in REPORTED:
            continue
        try:
            if entry.is_symlink() and outside_run_folder(entry.path, run):
                refused[entry.name] = OUTSIDE
            elif not entry.is_file(follow_symlinks=True) and os.path.exists(entry.path):
                refused[entry.name] = NOT_REGULAR
        except OSError:
            refused[entry.name] = NOT_REGULAR
    return refused


def refused_note(run: str | Path, name: str, why: str) -> str:
    """The sentence that says a file was left out (plain text, to escape)."""
    what = f"{name} of {Path(run).name}"
    if name == SUMMARY_FILE:  # load_runs read it for the table before the report began
        return f"{what}: {why}; the table's figures of this run come from it"
    return f"{what}: {why}; not read into this report"
