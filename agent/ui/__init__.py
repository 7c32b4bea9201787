"""The local commissioning page: a small aiohttp server in its own process (``cityedge ui``)
that shows the running agent live and writes points through its command router, both over
the agent's control socket. The daemon never imports this package."""
