"""Machinery that runs the stages: the Stage protocol, pipeline, work-directory lock, interrupts,
resources, guards."""
