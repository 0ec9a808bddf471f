"""Sans-IO core of the exec-server protocol: envelope, framing, messages, ordering.

Nothing in this package imports trio or does I/O (a test enforces it).
"""
