"""The TLS front door: pyOpenSSL termination that captures every client chain."""
