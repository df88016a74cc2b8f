"""Pure-Python parts shared by the GIMP plug-in and the backend: wire protocol, settings, client.

Only the standard library and pyzmq are imported here (GIMP's Python has no numpy or torch)."""
