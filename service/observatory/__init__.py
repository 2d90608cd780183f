"""The chain observatory: every client chain seen, remembered, replayed and drawn.

``registry`` aggregates decisions and messages per chain in memory and flushes them to
the inbox database; ``policies`` fingerprints and describes a policy; ``simulate``
decides recorded chains under a candidate policy; ``picture`` draws a chain as SVG.
"""
