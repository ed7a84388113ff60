"""What every scenario of run.py shares: paths and profiles, the per-system virtualenvs, worker processes, the
scratch boards of a run (`Bench`), statistics and fixed-width tables.

Standard library only, like run.py: imported by the orchestrator, never inside a system's virtualenv.
"""
