"""HTTP plumbing shared by the two optional web services (``fgvc serve`` and ``fgvc server``), so each fix lands
once: ``errors`` (the one :class:`Refusal`, JSON envelope and status mapping, the exception handlers),
``bounded_body`` (the request-body size limit), ``headers`` (the security headers), ``metrics`` (Prometheus
``/metrics`` with a registry per app), ``netbind`` (the listening socket and the one Uvicorn setup) and
``extras`` (the one "extra not installed" message)."""
