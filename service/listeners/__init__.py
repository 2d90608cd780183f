"""Accepting connections: where each comes from (the TCP peer, or the client a trusted
proxy names in a PROXY header, ``origin``), serving HTTP on them through hypercorn
(``hypercorn_glue``), and the plain-HTTP listener (``plain``). The TLS listener, which also
captures the client's chain, is in ``service/tls/``."""
