"""`make bench`: the speed, memory, listing-cost and cold-start figures of issue 3.

Not shipped (it lives outside ``chalicelib``) and not part of ``make test``:
it takes minutes and measures the machine as much as the code. Every
measured run happens in a fresh child process (``bench.child``) against a
moto server in yet another process, so one run's memory or warm caches
cannot flatter the next.
"""
