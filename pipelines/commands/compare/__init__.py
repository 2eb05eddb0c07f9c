"""``tfpipe compare A B``: two runs (by the id ``tfpipe history`` prints, or a unique prefix of it) or two evaluate
artifacts side by side: parameters, source fingerprints, data statistics, metrics and per-class deltas.

A package rather than one module because pipelines/commands/ holds as many modules as a folder may
(tests/test_layout.py): ``sides.py`` reads what a run or an evaluate artifact knows (local or bucket roots),
``diff.py`` compares two of those (dicts in, a dict out: what ``--json`` prints), ``command.py`` is the command
and renders the table.
"""

from pipelines.commands.compare.command import NAME, add_parser, run

__all__ = ["NAME", "add_parser", "run"]
