"""Sweeps: a sweep file expanded into planned runs, run in parallel, resumed.

``spec`` holds what a sweep is (:class:`Sweep`, :class:`PlannedRun`); ``syntax`` the small
syntax of value lists and run names; ``plan`` reads a sweep file into a :class:`Sweep`;
``checks`` refuses invalid plans; ``view`` prints ``--dry-run``; ``run`` executes a sweep
(resume, ``sweep.json``, signals) with the ``local`` worker processes or the Ray tasks of
``ray_executor``, which share ``worker`` (one run, and what is recorded when it dies). The
public names are in :mod:`gradlab`.
"""
