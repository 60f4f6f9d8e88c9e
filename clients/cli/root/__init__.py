"""The `samstream` package: the namespace of samstream.model, samstream.stream and samstream.clients.

pyproject maps it to this folder only so that `python -m samstream` runs the command line (__main__.py);
the code lives in the three floors (clients -> stream -> model, DESIGN.md's dependency rules).
"""
