"""Reading the input table, its images, and writing the results table."""
