"""Metrics and logs of a process: Prometheus metrics on a registry per process
(``metrics``), and text or JSON log lines that carry the job they are about (``logs``).

Nothing here connects anywhere or registers anything globally on import.
"""
