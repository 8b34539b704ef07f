"""Machinery that runs the stages: pipeline, work-directory lock, interrupts, resources, guards."""
