"""The sun at the pole's site, computed offline: shared by the lighting config's checks
(which lay every profile on a year of real nights) and the lighting program's evaluator.

Pure and standard-library only: it imports nothing else of the agent.
"""
