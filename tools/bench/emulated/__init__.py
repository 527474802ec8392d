"""An emulated Mainline DHT of millions of virtual nodes, answering on 127.0.0.0/8.

`model` builds the network (ids, addresses, behaviours, routing tables computed on demand)
and answers one datagram at a time, with time passed in; `server` is the UDP loop that
delays, loses and rate-limits; `tools/bench/emulated_dht.py` is the command line. A
benchmark tool of the project, not a test double: what it measures (the crawler, lookups)
is the real code over real UDP.
"""
