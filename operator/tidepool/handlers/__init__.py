"""Thin Kopf handlers: convert kwargs to typed models, call :mod:`tidepool.reconcile`, write back.

Importing this package registers the handlers with Kopf.
"""
