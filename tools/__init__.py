"""The peer finder and the crawler (`peer_finder.py`, `crawler.py`, `crawling/`), built on
mldht's public API. From a clone they run as scripts (`python tools/crawler.py`); the wheel
ships them as the package `mldht_tools`, run by the `mldht-peer-finder` and `mldht-crawler`
commands (`pip install 'mldht[tools]'`). The benchmarks in `bench/` stay in the clone."""
