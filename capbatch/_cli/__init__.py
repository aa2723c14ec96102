"""The command line's parts: error mapping and exit statuses, the run and report commands."""
