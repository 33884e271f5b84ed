"""Use cases: create, list, cancel, retry and run jobs. Transactions live here."""
