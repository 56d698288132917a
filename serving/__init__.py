"""serving: SavedModel export, a TF-Serving-compatible server and client (not built yet: issue "Serving")."""
