"""Fuzzing of tfpipe's byte-level readers (issue 13, item 4): targets, seed corpus, bounded atheris runs.

``targets.py`` holds one ``fuzz_<name>(data)`` per reader, ``corpus.py`` writes the seed corpus, ``run.py``
runs each target under atheris/libFuzzer for a bounded time. ``tests/reliability/test_fuzz_targets.py`` runs
the same targets without atheris over the seeds and deterministic mutations.
"""
