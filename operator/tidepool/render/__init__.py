"""Pure builders of the Kubernetes objects Tidepool owns. No I/O, no clock, no framework.

Same input, byte-identical output: labels and env are sorted, nothing is generated at random.
"""
