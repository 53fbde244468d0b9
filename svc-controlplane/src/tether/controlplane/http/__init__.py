"""The HTTP layer under every route: request-body bounds, strict JSON bodies, the
trusted-proxy scheme, the Host/Origin guard and the security headers."""
