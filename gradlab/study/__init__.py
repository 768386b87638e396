"""The study side: run folders -> tables, statistics, exports and plots (pandas, never torch).

``reading`` finds and reads run folders, ``compare`` groups them into the comparison table,
``baseline`` and ``stats`` test rows against a baseline, ``numbers``, ``exports``, ``latex``
and ``layout`` turn the table into text, ``plots`` (with ``bands``, ``labels``,
``figures``) and ``inspection`` draw figures. The public names are in :mod:`gradlab`.
"""
