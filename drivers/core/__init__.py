"""What the drivers and the agent share, on the drivers' side so ``drivers/`` never imports
``agent/``: the reading record (``reading``), the profile and point model (``profile``) and its
library (``library``), the bus and device configuration (``config``), endpoints (``endpoint``),
configuration errors and their positions (``errors``, ``locate``), filter chain specs
(``filters``), value resolution (``resolution``), Smart Data Models terms (``sdm_terms``) and
event waits (``waits``)."""
