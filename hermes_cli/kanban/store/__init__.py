"""The store: the only code that speaks SQL. Split by concern; `connection` owns opening and transactions."""
