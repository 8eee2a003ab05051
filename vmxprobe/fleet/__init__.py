"""Fleet inventory over scan reports: the report check, the summary and the diff."""
