"""Reports: tables, markdown and plots of runs."""
