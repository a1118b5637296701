"""The Streamlit layer: caching, session state, shared widgets and charts.

This package and ``pages/`` are the only places that import streamlit; the numeric core
(the rest of ``lowrank_lab``) never does.
"""
