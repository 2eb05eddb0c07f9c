"""The commands of ``tfpipe`` (pipelines/cli.py), one module each: ``add_parser(subparsers)`` declares its flags,
``run(args)`` does it and returns the exit status."""
