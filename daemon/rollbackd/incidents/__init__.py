"""Incidents: intake (alert -> decision -> journaled incident) and the runner (the runbook)."""
