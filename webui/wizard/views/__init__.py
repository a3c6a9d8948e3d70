"""Page views, one module per area; each view fetches, calls the domain, renders."""
