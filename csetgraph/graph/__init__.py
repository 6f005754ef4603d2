"""csetgraph.graph"""
