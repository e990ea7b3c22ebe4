"""Async jobs (``Prefer: respond-async``) and their signed webhooks.

``routes`` accepts a validated request as a job (its inputs stored first) and serves
``/v3/images/jobs``; ``store`` keeps job records and ``queue`` the jobs to run, in Redis
(shared by replicas) or in this process; ``runner`` runs them through the synchronous
pipeline (``proxy.pipeline``); ``webhooks`` signs and delivers the terminal state.
"""
