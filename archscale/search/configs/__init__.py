"""One configuration: its context, its cost and verdict, and the results store."""
