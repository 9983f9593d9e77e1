"""Samplers: how one token is chosen under a constraint.

``sampling`` (temperature, top-k/p, repetition penalty, the masked choice), ``awrs``
(adaptive weighted rejection sampling), ``smc`` (sequential Monte Carlo over AWRS
particles) and ``asap`` (grammar-aligned sampling). The decode loop
(:mod:`plugin.decoding`) calls them; nothing is re-exported here so that importing one
sampler does not import the others.
"""
