"""HTTP plumbing shared by the two optional web services (``fgvc serve`` and ``fgvc server``): the request-body
size limit (``bounded_body``) and the listening socket with the one Uvicorn setup (``netbind``)."""
