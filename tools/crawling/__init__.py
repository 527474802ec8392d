"""The parts of tools/crawler.py: the sweep (traversal), the database (store), the size
estimates, the report and the export. Built on mldht's public API only."""
