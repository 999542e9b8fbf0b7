"""A whole run across the ranks: every check before any job (`prepare`), rank 0 coordinating and the workers
executing (`session`), the lines printed as it goes (`progress`)."""
