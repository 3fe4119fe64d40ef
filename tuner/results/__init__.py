"""Results: what a search left in storage, ranked and retrieved."""
