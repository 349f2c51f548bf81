"""`make bench`: the Conversation API's streaming path measured against bare Starlette endpoints.

Start at `benchmarks.run` (the command line); `docs/benchmarks.md` explains what is measured
and how.
"""
