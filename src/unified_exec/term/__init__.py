"""``unified-exec exec``: a ``docker exec -it``-style client, local or on an exec-server."""
