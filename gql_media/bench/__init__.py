"""``gql-media bench``: a bounded benchmark of a deployment, printed as a table and as JSON.

Scenarios (``--only``): submit, pickup, e2e, drain, fanout-updated, fanout-events, images;
``runner`` runs them in that order, each bounded by a count and a timeout. How each one
measures is described in its module (``jobs``, ``fanout``, ``images``).
"""
