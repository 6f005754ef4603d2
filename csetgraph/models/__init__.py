"""csetgraph.models"""
