"""Glue between the cluster and the pure core: observe through ports, decide, render, write.

Framework-free (no Kopf, by import-linter contract), so it runs the same under Kopf, in tests
against fakes, and against the real control plane.
"""
