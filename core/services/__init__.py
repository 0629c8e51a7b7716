"""Services: keyword-only async functions over the store that raise domain errors."""
